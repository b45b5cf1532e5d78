// A CCGSC kernel: the task's input arrives on stdin, its result goes to stdout, exit code 0
// means success (docs/kernels.md). This one counts the primes below N, N being the first
// argument or else the input text.
//
//   ccgsc kernel build kernel.rs             # -> kernel.wasm (rustc --target wasm32-wasi)
//   echo 1000 | ccgsc kernel run kernel.wasm
//   printf '1000\n2000\n' > tasks.txt && ccgsc run kernel.rs --tasks tasks.txt
use std::io::Read;
use std::process::exit;

// The optional host imports (module "ccgsc"); a kernel that calls neither is plain WASI.
#[link(wasm_import_module = "ccgsc")]
extern "C" {
    fn progress(fraction: f64);
    #[allow(dead_code)]
    fn checkpoint(ptr: *const u8, len: i32) -> i32;
}

fn main() {
    let text = match std::env::args().nth(1) {
        Some(arg) => arg,
        None => {
            let mut input = String::new();
            if let Err(err) = std::io::stdin().read_to_string(&mut input) {
                eprintln!("reading the input: {}", err);
                exit(1);
            }
            input
        }
    };
    let n: u64 = match text.trim().parse() {
        Ok(n) => n,
        Err(_) => {
            eprintln!("expected one number, got {:?}", text);
            exit(2);
        }
    };
    let mut count = 0u64;
    for i in 2..n {
        if (2..).take_while(|d| d * d <= i).all(|d| i % d != 0) {
            count += 1;
        }
        if i % 65536 == 0 {
            unsafe { progress(i as f64 / n as f64) };
        }
    }
    println!("{}", count);
}
