use wasmpickle_guest::export;

#[export]
pub unsafe fn read(addr: usize) -> u8 {
    unsafe { *(addr as *const u8) }
}

fn main() {}
