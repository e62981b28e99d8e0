//! TEMPORARY: replaced by the config branch's env module.
#[derive(Debug)]
pub struct ExpandError;
pub fn expand(
    template: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(j) = after.find('}') else {
            return Err(ExpandError);
        };
        let inner = &after[..j];
        let (name, def) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        match lookup(name)
            .filter(|v| !v.is_empty())
            .or(def.map(str::to_string))
        {
            Some(v) => out.push_str(&v),
            None => return Err(ExpandError),
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
pub fn missing_required_env(stack: &crate::config::Stack) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in &stack.processes {
        for v in &p.require_env {
            let set = p
                .env
                .0
                .get(v)
                .cloned()
                .or_else(|| std::env::var(v).ok())
                .is_some_and(|x| !x.is_empty());
            if !set {
                out.push((p.name.clone(), v.clone()));
            }
        }
    }
    out
}
