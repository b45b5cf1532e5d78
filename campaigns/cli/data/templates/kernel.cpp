// A CCGSC kernel: the task's input arrives on stdin, its result goes to stdout, exit code 0
// means success (docs/kernels.md). This one counts the primes below N, N being the first
// argument or else the input text. C++ kernels build without exceptions (wasm32-wasi).
//
//   ccgsc kernel build kernel.cpp            # -> kernel.wasm
//   echo 1000 | ccgsc kernel run kernel.wasm
//   printf '1000\n2000\n' > tasks.txt && ccgsc run kernel.cpp --tasks tasks.txt
#include "ccgsc.h"

#include <cstdint>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

int main(int argc, char **argv) {
    std::string text = argc > 1 ? std::string(argv[1])
                                : std::string(std::istreambuf_iterator<char>(std::cin), {});
    uint64_t n;
    if (ccgsc_parse_u64s(text.c_str(), &n, 1) != 0) {
        std::cerr << "expected one number, got \"" << text << "\"\n";
        return 2;
    }
    std::vector<bool> composite(n > 2 ? n : 2, false);
    uint64_t count = 0;
    for (uint64_t i = 2; i < n; i++) {
        if (composite[i]) continue;
        count++;
        for (uint64_t j = i * i; j < n; j += i) composite[j] = true;
    }
    ccgsc_progress(1.0);  // optional
    std::cout << count << "\n";
    return 0;
}
