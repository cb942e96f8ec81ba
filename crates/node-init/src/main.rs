//! PID 1 of the test node: finds the TALOS_ volume and reports its image cache on the serial console.

fn main() {}
