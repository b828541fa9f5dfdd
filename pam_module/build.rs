//! Link flags of `pam_forcelogout.so`.

fn main() {
    // NODELETE: a process that makes many logins (cron, a display manager, a PAM test driver)
    // loads the module at its first pam_start and keeps it, instead of mapping and relocating
    // it again at every pam_start and unmapping it at every pam_end (about 0.7 ms: most of it
    // the relocation of chrono-tz's zone tables). The module keeps no state between handles
    // (see KeptStore), so staying loaded changes nothing else.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
}
