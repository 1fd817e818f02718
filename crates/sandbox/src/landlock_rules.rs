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
            if libc::geteuid() == 0 {
                drop_ptrace_capability()?;
            }
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

/// `CAP_SYS_PTRACE`, from linux/capability.h.
const CAP_SYS_PTRACE: u32 = 19;
const PR_CAPBSET_DROP: libc::c_int = 24;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// A command run as root keeps root's file access but loses `CAP_SYS_PTRACE` — from its bounding set
/// (root's exec would otherwise get it back) and its current sets — so with the orchestrator not
/// dumpable (see [`crate::protect_process`]) it cannot read the orchestrator's `/proc/<pid>/environ`
/// or memory, where the API key is. Plain system calls on stack memory: safe between fork and exec.
///
/// # Safety
/// Only for the child between fork and exec.
unsafe fn drop_ptrace_capability() -> std::io::Result<()> {
    if libc::prctl(PR_CAPBSET_DROP, CAP_SYS_PTRACE as libc::c_ulong, 0, 0, 0) != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    if libc::syscall(libc::SYS_capget, &mut header as *mut CapHeader, data.as_mut_ptr()) != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let bit = !(1u32 << CAP_SYS_PTRACE);
    data[0].effective &= bit;
    data[0].permitted &= bit;
    data[0].inheritable &= bit;
    if libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
