/* The benchmark's child: N lines of exactly 100 bytes ("%09d " + 90
 * letters + "\n"), written as fast as stdio can (64 KiB buffer), so the
 * writer is never the bottleneck. Usage: logs-writer N */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    static char buf[1 << 16];
    setvbuf(stdout, buf, _IOFBF, sizeof buf);
    char line[101];
    memset(line, 'a', sizeof line);
    for (int i = 10; i < 99; i++) line[i] = 'a' + (i % 26);
    line[99] = '\n';
    for (long i = 1; i <= n; i++) {
        char num[16];
        snprintf(num, sizeof num, "%09ld ", i);
        memcpy(line, num, 10);
        if (fwrite(line, 1, 100, stdout) != 100) return 1;
    }
    return fflush(stdout) == 0 ? 0 : 1;
}
