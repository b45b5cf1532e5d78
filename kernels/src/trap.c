/* trap (test kernel): executes the wasm "unreachable" instruction. */
int main(void) { __builtin_trap(); }
