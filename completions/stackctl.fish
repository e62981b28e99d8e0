# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_stackctl_global_optspecs
    string join \n f/file= q/quiet v/verbose no-color h/help V/version
end

function __fish_stackctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_stackctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_stackctl_using_subcommand
    set -l cmd (__fish_stackctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c stackctl -n "__fish_stackctl_needs_command" -s f -l file -d 'The stack file (default: ./stack.toml or the nearest in a parent folder). Give it before the command (`stackctl -f x.toml status`); after `logs`, `-f` means `--follow`' -r -F
complete -c stackctl -n "__fish_stackctl_needs_command" -s q -l quiet -d 'Print only errors'
complete -c stackctl -n "__fish_stackctl_needs_command" -s v -l verbose -d 'Print more: also the "starting" and "stopping" step of every process'
complete -c stackctl -n "__fish_stackctl_needs_command" -l no-color -d 'Never colour the output (also: the NO_COLOR environment variable)'
complete -c stackctl -n "__fish_stackctl_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c stackctl -n "__fish_stackctl_needs_command" -s V -l version -d 'Print version'
complete -c stackctl -n "__fish_stackctl_needs_command" -f -a "start" -d 'Starts the stack (or NAMEs with their dependencies) and returns when ready'
complete -c stackctl -n "__fish_stackctl_needs_command" -f -a "stop" -d 'Stops NAMEs, or everything and then the supervisor'
complete -c stackctl -n "__fish_stackctl_needs_command" -f -a "restart" -d 'Stops then starts NAMEs (default: the whole stack, tasks re-run)'
complete -c stackctl -n "__fish_stackctl_needs_command" -f -a "status" -d 'Shows every process: pid, state, readiness, uptime, restarts, memory'
complete -c stackctl -n "__fish_stackctl_needs_command" -f -a "analyze" -d 'Shows the last start: what each process waited for, how long it took itself, and the critical chain that decided the total'
complete -c stackctl -n "__fish_stackctl_needs_command" -f -a "scale" -d 'Grows or shrinks a worker pool live'
complete -c stackctl -n "__fish_stackctl_needs_command" -f -a "logs" -d 'Shows the last lines of process logs, or follows them'
complete -c stackctl -n "__fish_stackctl_needs_command" -f -a "check" -d 'Validates the stack file without running anything'
complete -c stackctl -n "__fish_stackctl_needs_command" -f -a "reload" -d 'Re-reads the stack file and applies only the difference'
complete -c stackctl -n "__fish_stackctl_needs_command" -f -a "lock" -d 'Reads and changes the stack-owner lock (free / deploy / export)'
complete -c stackctl -n "__fish_stackctl_needs_command" -f -a "keep" -d 'Runs the deploy keeper loop in the foreground'
complete -c stackctl -n "__fish_stackctl_needs_command" -f -a "upgrade" -d 'Replaces the running supervisor with this binary, restarting no process'
complete -c stackctl -n "__fish_stackctl_needs_command" -f -a "export" -d 'Writes systemd units, a compose file or Kubernetes manifests from the stack file'
complete -c stackctl -n "__fish_stackctl_needs_command" -f -a "probe" -d 'Runs one of stackctl\'s probes (called by units `export systemd` writes)'
complete -c stackctl -n "__fish_stackctl_needs_command" -f -a "supervise" -d 'Runs the supervisor (started by `start`; not for direct use)'
complete -c stackctl -n "__fish_stackctl_needs_command" -f -a "anchor" -d 'Runs the stack\'s anchor (started by `start`; not for direct use)'
complete -c stackctl -n "__fish_stackctl_needs_command" -f -a "generate" -d 'Writes the man pages and shell completions'
complete -c stackctl -n "__fish_stackctl_needs_command" -f -a "listen-exec" -d 'Places passed sockets at fds 3… and runs a program with `LISTEN_PID` (how a service with `listen` is started; not for direct use)'
complete -c stackctl -n "__fish_stackctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c stackctl -n "__fish_stackctl_using_subcommand start" -l scale -d 'Start pool NAME with N instances (repeatable)' -r
complete -c stackctl -n "__fish_stackctl_using_subcommand start" -l foreground -d 'Run the supervisor in this terminal, streaming every process\'s output'
complete -c stackctl -n "__fish_stackctl_using_subcommand start" -l tmux -d 'Run the supervisor in a detached tmux session `stackctl-<stack>`'
complete -c stackctl -n "__fish_stackctl_using_subcommand start" -l force -d 'Start even while the stack-owner lock is held by an export'
complete -c stackctl -n "__fish_stackctl_using_subcommand start" -l update-env -d 'Give what this starts (NAMEs and their dependencies, from their next spawn) this command\'s environment instead of the supervisor\'s; the names of the variables that changed are shown, never their values'
complete -c stackctl -n "__fish_stackctl_using_subcommand start" -s q -l quiet -d 'Print only errors'
complete -c stackctl -n "__fish_stackctl_using_subcommand start" -s v -l verbose -d 'Print more: also the "starting" and "stopping" step of every process'
complete -c stackctl -n "__fish_stackctl_using_subcommand start" -l no-color -d 'Never colour the output (also: the NO_COLOR environment variable)'
complete -c stackctl -n "__fish_stackctl_using_subcommand start" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c stackctl -n "__fish_stackctl_using_subcommand start" -s V -l version -d 'Print version'
complete -c stackctl -n "__fish_stackctl_using_subcommand stop" -l with-dependents -d 'Stop what depends on NAMEs (directly or not) first, in reverse dependency order, as systemd\'s `Requires=` does'
complete -c stackctl -n "__fish_stackctl_using_subcommand stop" -l force -d 'Stop even while the stack-owner lock is held by an export'
complete -c stackctl -n "__fish_stackctl_using_subcommand stop" -s q -l quiet -d 'Print only errors'
complete -c stackctl -n "__fish_stackctl_using_subcommand stop" -s v -l verbose -d 'Print more: also the "starting" and "stopping" step of every process'
complete -c stackctl -n "__fish_stackctl_using_subcommand stop" -l no-color -d 'Never colour the output (also: the NO_COLOR environment variable)'
complete -c stackctl -n "__fish_stackctl_using_subcommand stop" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c stackctl -n "__fish_stackctl_using_subcommand stop" -s V -l version -d 'Print version'
complete -c stackctl -n "__fish_stackctl_using_subcommand restart" -l force -d 'Restart even while the stack-owner lock is held by an export'
complete -c stackctl -n "__fish_stackctl_using_subcommand restart" -l update-env -d 'Give what this restarts this command\'s environment instead of the supervisor\'s (kept for later restarts, and by a relaunched supervisor); the names of the variables that changed are shown, never their values'
complete -c stackctl -n "__fish_stackctl_using_subcommand restart" -s q -l quiet -d 'Print only errors'
complete -c stackctl -n "__fish_stackctl_using_subcommand restart" -s v -l verbose -d 'Print more: also the "starting" and "stopping" step of every process'
complete -c stackctl -n "__fish_stackctl_using_subcommand restart" -l no-color -d 'Never colour the output (also: the NO_COLOR environment variable)'
complete -c stackctl -n "__fish_stackctl_using_subcommand restart" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c stackctl -n "__fish_stackctl_using_subcommand restart" -s V -l version -d 'Print version'
complete -c stackctl -n "__fish_stackctl_using_subcommand status" -l json -d 'Print one JSON document instead of the table (the shape is in the README)'
complete -c stackctl -n "__fish_stackctl_using_subcommand status" -s w -l watch -d 'Keep showing it: the table redrawn in place on every change (on a terminal) until Ctrl-C; elsewhere one table (or with --json one JSON document per line) per change. Needs a running supervisor'
complete -c stackctl -n "__fish_stackctl_using_subcommand status" -s q -l quiet -d 'Print only errors'
complete -c stackctl -n "__fish_stackctl_using_subcommand status" -s v -l verbose -d 'Print more: also the "starting" and "stopping" step of every process'
complete -c stackctl -n "__fish_stackctl_using_subcommand status" -l no-color -d 'Never colour the output (also: the NO_COLOR environment variable)'
complete -c stackctl -n "__fish_stackctl_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c stackctl -n "__fish_stackctl_using_subcommand status" -s V -l version -d 'Print version'
complete -c stackctl -n "__fish_stackctl_using_subcommand analyze" -l json -d 'Print one JSON document (`op`, `at`, `total_s`, `chain`, `processes`, `restarts`) instead of the text'
complete -c stackctl -n "__fish_stackctl_using_subcommand analyze" -s q -l quiet -d 'Print only errors'
complete -c stackctl -n "__fish_stackctl_using_subcommand analyze" -s v -l verbose -d 'Print more: also the "starting" and "stopping" step of every process'
complete -c stackctl -n "__fish_stackctl_using_subcommand analyze" -l no-color -d 'Never colour the output (also: the NO_COLOR environment variable)'
complete -c stackctl -n "__fish_stackctl_using_subcommand analyze" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c stackctl -n "__fish_stackctl_using_subcommand analyze" -s V -l version -d 'Print version'
complete -c stackctl -n "__fish_stackctl_using_subcommand scale" -l force -d 'Scale even while the stack-owner lock is held by an export'
complete -c stackctl -n "__fish_stackctl_using_subcommand scale" -s q -l quiet -d 'Print only errors'
complete -c stackctl -n "__fish_stackctl_using_subcommand scale" -s v -l verbose -d 'Print more: also the "starting" and "stopping" step of every process'
complete -c stackctl -n "__fish_stackctl_using_subcommand scale" -l no-color -d 'Never colour the output (also: the NO_COLOR environment variable)'
complete -c stackctl -n "__fish_stackctl_using_subcommand scale" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c stackctl -n "__fish_stackctl_using_subcommand scale" -s V -l version -d 'Print version'
complete -c stackctl -n "__fish_stackctl_using_subcommand logs" -s n -l lines -d 'How many lines from the end of each log (with --grep: how many matches, over all the logs shown)' -r
complete -c stackctl -n "__fish_stackctl_using_subcommand logs" -l since -d 'Only lines written within this long (e.g. 10m); needs timestamps or file times' -r
complete -c stackctl -n "__fish_stackctl_using_subcommand logs" -l grep -d 'Only lines matching this regular expression' -r
complete -c stackctl -n "__fish_stackctl_using_subcommand logs" -s f -l follow -d 'Keep following'
complete -c stackctl -n "__fish_stackctl_using_subcommand logs" -l current -d 'Only the current run of each process: from the run marker stackctl wrote when it (or its pre_start) last started'
complete -c stackctl -n "__fish_stackctl_using_subcommand logs" -s q -l quiet -d 'Print only errors'
complete -c stackctl -n "__fish_stackctl_using_subcommand logs" -s v -l verbose -d 'Print more: also the "starting" and "stopping" step of every process'
complete -c stackctl -n "__fish_stackctl_using_subcommand logs" -l no-color -d 'Never colour the output (also: the NO_COLOR environment variable)'
complete -c stackctl -n "__fish_stackctl_using_subcommand logs" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c stackctl -n "__fish_stackctl_using_subcommand logs" -s V -l version -d 'Print version'
complete -c stackctl -n "__fish_stackctl_using_subcommand check" -l json -d 'Print the result as JSON on stdout (`ok`, `file`, and `order` or `problems`)'
complete -c stackctl -n "__fish_stackctl_using_subcommand check" -s q -l quiet -d 'Print only errors'
complete -c stackctl -n "__fish_stackctl_using_subcommand check" -s v -l verbose -d 'Print more: also the "starting" and "stopping" step of every process'
complete -c stackctl -n "__fish_stackctl_using_subcommand check" -l no-color -d 'Never colour the output (also: the NO_COLOR environment variable)'
complete -c stackctl -n "__fish_stackctl_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c stackctl -n "__fish_stackctl_using_subcommand check" -s V -l version -d 'Print version'
complete -c stackctl -n "__fish_stackctl_using_subcommand reload" -l force -d 'Reload even while the stack-owner lock is held by an export'
complete -c stackctl -n "__fish_stackctl_using_subcommand reload" -l dry-run -d 'Print the plan and change nothing (no lock needed)'
complete -c stackctl -n "__fish_stackctl_using_subcommand reload" -l json -d 'Print the plan as one JSON document (after the reload, or instead of it with --dry-run) instead of lines'
complete -c stackctl -n "__fish_stackctl_using_subcommand reload" -s q -l quiet -d 'Print only errors'
complete -c stackctl -n "__fish_stackctl_using_subcommand reload" -s v -l verbose -d 'Print more: also the "starting" and "stopping" step of every process'
complete -c stackctl -n "__fish_stackctl_using_subcommand reload" -l no-color -d 'Never colour the output (also: the NO_COLOR environment variable)'
complete -c stackctl -n "__fish_stackctl_using_subcommand reload" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c stackctl -n "__fish_stackctl_using_subcommand reload" -s V -l version -d 'Print version'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and not __fish_seen_subcommand_from acquire release current status help" -s q -l quiet -d 'Print only errors'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and not __fish_seen_subcommand_from acquire release current status help" -s v -l verbose -d 'Print more: also the "starting" and "stopping" step of every process'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and not __fish_seen_subcommand_from acquire release current status help" -l no-color -d 'Never colour the output (also: the NO_COLOR environment variable)'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and not __fish_seen_subcommand_from acquire release current status help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and not __fish_seen_subcommand_from acquire release current status help" -s V -l version -d 'Print version'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and not __fish_seen_subcommand_from acquire release current status help" -f -a "acquire" -d 'Takes the lock for OWNER (idempotent for the same owner and task id)'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and not __fish_seen_subcommand_from acquire release current status help" -f -a "release" -d 'Gives the lock back (only the task that holds it may)'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and not __fish_seen_subcommand_from acquire release current status help" -f -a "current" -d 'Prints the current owner: free, deploy or export'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and not __fish_seen_subcommand_from acquire release current status help" -f -a "status" -d 'Prints the whole lock record: owner, task, since when, why'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and not __fish_seen_subcommand_from acquire release current status help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and __fish_seen_subcommand_from acquire" -s q -l quiet -d 'Print only errors'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and __fish_seen_subcommand_from acquire" -s v -l verbose -d 'Print more: also the "starting" and "stopping" step of every process'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and __fish_seen_subcommand_from acquire" -l no-color -d 'Never colour the output (also: the NO_COLOR environment variable)'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and __fish_seen_subcommand_from acquire" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and __fish_seen_subcommand_from acquire" -s V -l version -d 'Print version'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and __fish_seen_subcommand_from release" -s q -l quiet -d 'Print only errors'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and __fish_seen_subcommand_from release" -s v -l verbose -d 'Print more: also the "starting" and "stopping" step of every process'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and __fish_seen_subcommand_from release" -l no-color -d 'Never colour the output (also: the NO_COLOR environment variable)'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and __fish_seen_subcommand_from release" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and __fish_seen_subcommand_from release" -s V -l version -d 'Print version'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and __fish_seen_subcommand_from current" -s q -l quiet -d 'Print only errors'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and __fish_seen_subcommand_from current" -s v -l verbose -d 'Print more: also the "starting" and "stopping" step of every process'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and __fish_seen_subcommand_from current" -l no-color -d 'Never colour the output (also: the NO_COLOR environment variable)'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and __fish_seen_subcommand_from current" -s h -l help -d 'Print help'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and __fish_seen_subcommand_from current" -s V -l version -d 'Print version'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and __fish_seen_subcommand_from status" -l json -d 'Print the record as JSON'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and __fish_seen_subcommand_from status" -s q -l quiet -d 'Print only errors'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and __fish_seen_subcommand_from status" -s v -l verbose -d 'Print more: also the "starting" and "stopping" step of every process'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and __fish_seen_subcommand_from status" -l no-color -d 'Never colour the output (also: the NO_COLOR environment variable)'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and __fish_seen_subcommand_from status" -s V -l version -d 'Print version'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and __fish_seen_subcommand_from help" -f -a "acquire" -d 'Takes the lock for OWNER (idempotent for the same owner and task id)'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and __fish_seen_subcommand_from help" -f -a "release" -d 'Gives the lock back (only the task that holds it may)'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and __fish_seen_subcommand_from help" -f -a "current" -d 'Prints the current owner: free, deploy or export'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and __fish_seen_subcommand_from help" -f -a "status" -d 'Prints the whole lock record: owner, task, since when, why'
complete -c stackctl -n "__fish_stackctl_using_subcommand lock; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c stackctl -n "__fish_stackctl_using_subcommand keep" -l trigger -d 'Ask a running keeper to deploy now, and return'
complete -c stackctl -n "__fish_stackctl_using_subcommand keep" -l tmux -d 'Run the keeper in a detached tmux session'
complete -c stackctl -n "__fish_stackctl_using_subcommand keep" -s q -l quiet -d 'Print only errors'
complete -c stackctl -n "__fish_stackctl_using_subcommand keep" -s v -l verbose -d 'Print more: also the "starting" and "stopping" step of every process'
complete -c stackctl -n "__fish_stackctl_using_subcommand keep" -l no-color -d 'Never colour the output (also: the NO_COLOR environment variable)'
complete -c stackctl -n "__fish_stackctl_using_subcommand keep" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c stackctl -n "__fish_stackctl_using_subcommand keep" -s V -l version -d 'Print version'
complete -c stackctl -n "__fish_stackctl_using_subcommand upgrade" -s q -l quiet -d 'Print only errors'
complete -c stackctl -n "__fish_stackctl_using_subcommand upgrade" -s v -l verbose -d 'Print more: also the "starting" and "stopping" step of every process'
complete -c stackctl -n "__fish_stackctl_using_subcommand upgrade" -l no-color -d 'Never colour the output (also: the NO_COLOR environment variable)'
complete -c stackctl -n "__fish_stackctl_using_subcommand upgrade" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c stackctl -n "__fish_stackctl_using_subcommand upgrade" -s V -l version -d 'Print version'
complete -c stackctl -n "__fish_stackctl_using_subcommand export" -l out -d 'Where to write the files (default: export/ENGINE in the stack file\'s folder)' -r -F
complete -c stackctl -n "__fish_stackctl_using_subcommand export" -l image -d 'compose, kubernetes: NAME=IMAGE for one process, IMAGE for every process without its own (repeatable; overrides [export])' -r
complete -c stackctl -n "__fish_stackctl_using_subcommand export" -l user -d 'systemd: user units (`systemctl --user`) rather than system units'
complete -c stackctl -n "__fish_stackctl_using_subcommand export" -l check -d 'Write nothing; exit 1 when the files on disk differ from what would be written, naming them'
complete -c stackctl -n "__fish_stackctl_using_subcommand export" -s q -l quiet -d 'Print only errors'
complete -c stackctl -n "__fish_stackctl_using_subcommand export" -s v -l verbose -d 'Print more: also the "starting" and "stopping" step of every process'
complete -c stackctl -n "__fish_stackctl_using_subcommand export" -l no-color -d 'Never colour the output (also: the NO_COLOR environment variable)'
complete -c stackctl -n "__fish_stackctl_using_subcommand export" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c stackctl -n "__fish_stackctl_using_subcommand export" -s V -l version -d 'Print version'
complete -c stackctl -n "__fish_stackctl_using_subcommand probe" -l http -d 'GET this URL; 2xx or 3xx passes' -r
complete -c stackctl -n "__fish_stackctl_using_subcommand probe" -l tcp -d 'Connect to HOST:PORT' -r
complete -c stackctl -n "__fish_stackctl_using_subcommand probe" -l shell -d 'Run this command with /bin/sh -c; exit 0 passes' -r
complete -c stackctl -n "__fish_stackctl_using_subcommand probe" -l timeout -d 'Gate: give up after this long (default 60s). Health: one check\'s limit (default 10s)' -r
complete -c stackctl -n "__fish_stackctl_using_subcommand probe" -l interval -d 'Gate: time between attempts (default 250ms)' -r
complete -c stackctl -n "__fish_stackctl_using_subcommand probe" -l failures -d 'Health: this many failures in a row restart `--restart`' -r
complete -c stackctl -n "__fish_stackctl_using_subcommand probe" -l count-file -d 'Health: where the failures in a row are counted across runs' -r -F
complete -c stackctl -n "__fish_stackctl_using_subcommand probe" -l restart -d 'Health: the unit to restart (`systemctl restart --no-block UNIT`)' -r
complete -c stackctl -n "__fish_stackctl_using_subcommand probe" -l reset-count -d 'Reset a health check\'s count (run when its unit starts)' -r -F
complete -c stackctl -n "__fish_stackctl_using_subcommand probe" -l require -d 'Fail unless this variable is set and not empty (repeatable)' -r
complete -c stackctl -n "__fish_stackctl_using_subcommand probe" -l alive -d 'The `alive` gate: wait this long, then pass if `--pid` still runs' -r
complete -c stackctl -n "__fish_stackctl_using_subcommand probe" -l pid -d 'The process the `alive` gate watches (the unit\'s $MAINPID)' -r
complete -c stackctl -n "__fish_stackctl_using_subcommand probe" -l user -d 'Health: restart through `systemctl --user`'
complete -c stackctl -n "__fish_stackctl_using_subcommand probe" -s q -l quiet -d 'Print only errors'
complete -c stackctl -n "__fish_stackctl_using_subcommand probe" -s v -l verbose -d 'Print more: also the "starting" and "stopping" step of every process'
complete -c stackctl -n "__fish_stackctl_using_subcommand probe" -l no-color -d 'Never colour the output (also: the NO_COLOR environment variable)'
complete -c stackctl -n "__fish_stackctl_using_subcommand probe" -s h -l help -d 'Print help'
complete -c stackctl -n "__fish_stackctl_using_subcommand probe" -s V -l version -d 'Print version'
complete -c stackctl -n "__fish_stackctl_using_subcommand supervise" -l stack -d 'The stack file (absolute)' -r -F
complete -c stackctl -n "__fish_stackctl_using_subcommand supervise" -l state-dir -d 'The stack\'s state folder (given by the anchor that launches it)' -r -F
complete -c stackctl -n "__fish_stackctl_using_subcommand supervise" -l foreground -d 'Stream every process\'s output to this terminal, prefixed by name'
complete -c stackctl -n "__fish_stackctl_using_subcommand supervise" -s q -l quiet -d 'Print only errors'
complete -c stackctl -n "__fish_stackctl_using_subcommand supervise" -s v -l verbose -d 'Print more: also the "starting" and "stopping" step of every process'
complete -c stackctl -n "__fish_stackctl_using_subcommand supervise" -l no-color -d 'Never colour the output (also: the NO_COLOR environment variable)'
complete -c stackctl -n "__fish_stackctl_using_subcommand supervise" -s h -l help -d 'Print help'
complete -c stackctl -n "__fish_stackctl_using_subcommand supervise" -s V -l version -d 'Print version'
complete -c stackctl -n "__fish_stackctl_using_subcommand anchor" -l state-dir -d 'The stack\'s state folder (absolute)' -r -F
complete -c stackctl -n "__fish_stackctl_using_subcommand anchor" -l stack -d 'The stack file (absolute), for the supervisors it launches' -r -F
complete -c stackctl -n "__fish_stackctl_using_subcommand anchor" -l exe -d 'The stackctl binary to launch supervisors with' -r -F
complete -c stackctl -n "__fish_stackctl_using_subcommand anchor" -l resume -d 'Go on as a re-executed anchor, from the state it left in this file' -r -F
complete -c stackctl -n "__fish_stackctl_using_subcommand anchor" -l no-launch -d 'Launch no supervisor now (the one that launched this connects)'
complete -c stackctl -n "__fish_stackctl_using_subcommand anchor" -l echo -d 'Print every process\'s output to stdout (`--foreground`)'
complete -c stackctl -n "__fish_stackctl_using_subcommand anchor" -l color -d 'Colour the echoed output'
complete -c stackctl -n "__fish_stackctl_using_subcommand anchor" -s q -l quiet -d 'Print only errors'
complete -c stackctl -n "__fish_stackctl_using_subcommand anchor" -s v -l verbose -d 'Print more: also the "starting" and "stopping" step of every process'
complete -c stackctl -n "__fish_stackctl_using_subcommand anchor" -l no-color -d 'Never colour the output (also: the NO_COLOR environment variable)'
complete -c stackctl -n "__fish_stackctl_using_subcommand anchor" -s h -l help -d 'Print help'
complete -c stackctl -n "__fish_stackctl_using_subcommand anchor" -s V -l version -d 'Print version'
complete -c stackctl -n "__fish_stackctl_using_subcommand generate" -l out -d 'Where to write it' -r -F
complete -c stackctl -n "__fish_stackctl_using_subcommand generate" -s q -l quiet -d 'Print only errors'
complete -c stackctl -n "__fish_stackctl_using_subcommand generate" -s v -l verbose -d 'Print more: also the "starting" and "stopping" step of every process'
complete -c stackctl -n "__fish_stackctl_using_subcommand generate" -l no-color -d 'Never colour the output (also: the NO_COLOR environment variable)'
complete -c stackctl -n "__fish_stackctl_using_subcommand generate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c stackctl -n "__fish_stackctl_using_subcommand generate" -s V -l version -d 'Print version'
complete -c stackctl -n "__fish_stackctl_using_subcommand listen-exec" -l fds -d 'The fds to place at 3, 4, … (in this order)' -r
complete -c stackctl -n "__fish_stackctl_using_subcommand listen-exec" -s q -l quiet -d 'Print only errors'
complete -c stackctl -n "__fish_stackctl_using_subcommand listen-exec" -s v -l verbose -d 'Print more: also the "starting" and "stopping" step of every process'
complete -c stackctl -n "__fish_stackctl_using_subcommand listen-exec" -l no-color -d 'Never colour the output (also: the NO_COLOR environment variable)'
complete -c stackctl -n "__fish_stackctl_using_subcommand listen-exec" -s h -l help -d 'Print help'
complete -c stackctl -n "__fish_stackctl_using_subcommand listen-exec" -s V -l version -d 'Print version'
complete -c stackctl -n "__fish_stackctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart status analyze scale logs check reload lock keep upgrade export probe supervise anchor generate listen-exec help" -f -a "start" -d 'Starts the stack (or NAMEs with their dependencies) and returns when ready'
complete -c stackctl -n "__fish_stackctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart status analyze scale logs check reload lock keep upgrade export probe supervise anchor generate listen-exec help" -f -a "stop" -d 'Stops NAMEs, or everything and then the supervisor'
complete -c stackctl -n "__fish_stackctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart status analyze scale logs check reload lock keep upgrade export probe supervise anchor generate listen-exec help" -f -a "restart" -d 'Stops then starts NAMEs (default: the whole stack, tasks re-run)'
complete -c stackctl -n "__fish_stackctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart status analyze scale logs check reload lock keep upgrade export probe supervise anchor generate listen-exec help" -f -a "status" -d 'Shows every process: pid, state, readiness, uptime, restarts, memory'
complete -c stackctl -n "__fish_stackctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart status analyze scale logs check reload lock keep upgrade export probe supervise anchor generate listen-exec help" -f -a "analyze" -d 'Shows the last start: what each process waited for, how long it took itself, and the critical chain that decided the total'
complete -c stackctl -n "__fish_stackctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart status analyze scale logs check reload lock keep upgrade export probe supervise anchor generate listen-exec help" -f -a "scale" -d 'Grows or shrinks a worker pool live'
complete -c stackctl -n "__fish_stackctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart status analyze scale logs check reload lock keep upgrade export probe supervise anchor generate listen-exec help" -f -a "logs" -d 'Shows the last lines of process logs, or follows them'
complete -c stackctl -n "__fish_stackctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart status analyze scale logs check reload lock keep upgrade export probe supervise anchor generate listen-exec help" -f -a "check" -d 'Validates the stack file without running anything'
complete -c stackctl -n "__fish_stackctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart status analyze scale logs check reload lock keep upgrade export probe supervise anchor generate listen-exec help" -f -a "reload" -d 'Re-reads the stack file and applies only the difference'
complete -c stackctl -n "__fish_stackctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart status analyze scale logs check reload lock keep upgrade export probe supervise anchor generate listen-exec help" -f -a "lock" -d 'Reads and changes the stack-owner lock (free / deploy / export)'
complete -c stackctl -n "__fish_stackctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart status analyze scale logs check reload lock keep upgrade export probe supervise anchor generate listen-exec help" -f -a "keep" -d 'Runs the deploy keeper loop in the foreground'
complete -c stackctl -n "__fish_stackctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart status analyze scale logs check reload lock keep upgrade export probe supervise anchor generate listen-exec help" -f -a "upgrade" -d 'Replaces the running supervisor with this binary, restarting no process'
complete -c stackctl -n "__fish_stackctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart status analyze scale logs check reload lock keep upgrade export probe supervise anchor generate listen-exec help" -f -a "export" -d 'Writes systemd units, a compose file or Kubernetes manifests from the stack file'
complete -c stackctl -n "__fish_stackctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart status analyze scale logs check reload lock keep upgrade export probe supervise anchor generate listen-exec help" -f -a "probe" -d 'Runs one of stackctl\'s probes (called by units `export systemd` writes)'
complete -c stackctl -n "__fish_stackctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart status analyze scale logs check reload lock keep upgrade export probe supervise anchor generate listen-exec help" -f -a "supervise" -d 'Runs the supervisor (started by `start`; not for direct use)'
complete -c stackctl -n "__fish_stackctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart status analyze scale logs check reload lock keep upgrade export probe supervise anchor generate listen-exec help" -f -a "anchor" -d 'Runs the stack\'s anchor (started by `start`; not for direct use)'
complete -c stackctl -n "__fish_stackctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart status analyze scale logs check reload lock keep upgrade export probe supervise anchor generate listen-exec help" -f -a "generate" -d 'Writes the man pages and shell completions'
complete -c stackctl -n "__fish_stackctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart status analyze scale logs check reload lock keep upgrade export probe supervise anchor generate listen-exec help" -f -a "listen-exec" -d 'Places passed sockets at fds 3… and runs a program with `LISTEN_PID` (how a service with `listen` is started; not for direct use)'
complete -c stackctl -n "__fish_stackctl_using_subcommand help; and not __fish_seen_subcommand_from start stop restart status analyze scale logs check reload lock keep upgrade export probe supervise anchor generate listen-exec help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c stackctl -n "__fish_stackctl_using_subcommand help; and __fish_seen_subcommand_from lock" -f -a "acquire" -d 'Takes the lock for OWNER (idempotent for the same owner and task id)'
complete -c stackctl -n "__fish_stackctl_using_subcommand help; and __fish_seen_subcommand_from lock" -f -a "release" -d 'Gives the lock back (only the task that holds it may)'
complete -c stackctl -n "__fish_stackctl_using_subcommand help; and __fish_seen_subcommand_from lock" -f -a "current" -d 'Prints the current owner: free, deploy or export'
complete -c stackctl -n "__fish_stackctl_using_subcommand help; and __fish_seen_subcommand_from lock" -f -a "status" -d 'Prints the whole lock record: owner, task, since when, why'
