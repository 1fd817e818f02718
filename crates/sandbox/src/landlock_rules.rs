//! The Landlock ruleset of a sandbox, and the restriction applied in the child before exec.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use landlock::{
    path_beneath_rules, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr,
    RulesetCreatedAttr, Scope, ABI,
};

use crate::SandboxError;

/// The ABI this code is written against (the crate's advice: a fixed target, degraded where the kernel
/// is older, never derived from the kernel at run time). 6 adds signal and abstract-socket scoping.
const TARGET: ABI = ABI::V6;

/// Device files every shell needs to write (`> /dev/null`, a terminal when there is one).
const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/tty",
    "/dev/random",
    "/dev/urandom",
];

/// `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`: the kernel's ABI, or 0.
pub(crate) fn kernel_abi() -> u32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute pointer and the VERSION flag the call only returns a number.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(abi).unwrap_or(0)
}

/// Read and run everything; change only beneath `writable` (and the device files); TCP only when
/// `network`. The filesystem part is a hard requirement: without it there is no sandbox.
pub(crate) fn build(abi: u32, writable: &[PathBuf], network: bool) -> Result<OwnedFd, SandboxError> {
    if abi == 0 {
        return Err(crate::check_supported()
            .err()
            .unwrap_or_else(|| SandboxError::Unsupported("this kernel has no Landlock".into())));
    }
    let setup = |e: landlock::RulesetError| SandboxError::Setup(e.to_string());
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(ABI::V1))
        .map_err(setup)?
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(TARGET))
        .map_err(setup)?;
    if !network {
        ruleset = ruleset
            .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
            .map_err(setup)?;
    }
    let ruleset = ruleset
        .scope(Scope::Signal | Scope::AbstractUnixSocket)
        .map_err(setup)?;
    let existing = |paths: Vec<&Path>| -> Vec<PathBuf> {
        paths
            .into_iter()
            .filter(|p| p.exists())
            .map(Path::to_path_buf)
            .collect()
    };
    let created = ruleset
        .create()
        .map_err(setup)?
        .add_rules(path_beneath_rules(["/"], AccessFs::from_read(TARGET)))
        .map_err(setup)?
        .add_rules(path_beneath_rules(
            existing(writable.iter().map(PathBuf::as_path).collect()),
            AccessFs::from_all(TARGET),
        ))
        .map_err(setup)?
        .add_rules(path_beneath_rules(
            existing(DEVICES.iter().map(Path::new).collect()),
            AccessFs::from_file(TARGET),
        ))
        .map_err(setup)?;
    let fd: Option<OwnedFd> = created.into();
    fd.ok_or_else(|| SandboxError::Unsupported("the kernel refused to create a Landlock ruleset".into()))
}

/// In the child, after fork and before exec: `no_new_privs` (which Landlock requires of unprivileged
/// callers, and which keeps setuid programs from lifting the sandbox), then the restriction. Both are
/// plain system calls, safe in a forked child of a multi-threaded process.
pub(crate) fn restrict_before_exec(command: &mut tokio::process::Command, ruleset: &OwnedFd) {
    let fd = ruleset.as_raw_fd();
    // SAFETY: the closure makes only async-signal-safe system calls and does not allocate (the error
    // is an OS error code). `fd` stays open in the parent for as long as the sandbox lives, and the
    // child got its own copy at fork.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
