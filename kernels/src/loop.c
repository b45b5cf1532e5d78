/* loop (test kernel): spins forever without output; the host must stop it. */
int main(void) {
    volatile unsigned long spins = 0;
    for (;;) spins++;
}
