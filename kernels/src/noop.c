/* noop: ignores stdin, writes nothing, exits 0 (scheduler benchmarks). */
int main(void) { return 0; }
