//! Helpers of the login tests: the scripted PAM handle, a lab on temp files, a stand-in daemon.

pub mod daemon;
pub mod lab;
pub mod script;
