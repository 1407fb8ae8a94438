//! Links the `delt` executable at a fixed address (not as a position-independent executable).
//!
//! A PIE is relocated when it starts: the loader writes every pointer in its read-only data
//! (4 MB of vtables and tables for DataFusion and candle), a copy-on-write fault per page. That
//! took 12-25 ms of each run on the benchmark VM, most of a small query's time. Linked at a
//! fixed address, those pointers are resolved by the linker.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
