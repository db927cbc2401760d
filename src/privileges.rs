//! Process identity: dropping root to `[main] user` after the sockets are
//! bound, and forking into the background for `--daemon`.

use std::ffi::CString;
use std::path::Path;

use anyhow::{bail, Context};
use nix::unistd::{self, Uid, User};

/// Switches to `name`'s uid, gid and supplementary groups. The directories
/// the daemon writes to are handed to that user first. A no-op (with a
/// check) when already running as that user.
///
/// # Errors
/// Unknown user, or a failed chown/setgid/setuid.
pub fn drop_to(name: &str, dirs: &[&Path]) -> anyhow::Result<()> {
    let user = User::from_name(name)
        .context("cannot look up the user")?
        .with_context(|| format!("no user named {name:?}; create it or fix [main] user"))?;
    let me = Uid::current();
    if me == user.uid {
        return Ok(());
    }
    if !me.is_root() {
        bail!("only root can switch users (running as uid {me}); drop [main] user or run as root");
    }
    for dir in dirs {
        unistd::chown(*dir, Some(user.uid), Some(user.gid))
            .with_context(|| format!("cannot chown {}", dir.display()))?;
    }
    let cname = CString::new(name).context("user name holds a NUL byte")?;
    unistd::initgroups(&cname, user.gid).context("initgroups")?;
    unistd::setgid(user.gid).context("setgid")?;
    unistd::setuid(user.uid).context("setuid")?;
    Ok(())
}

/// Forks into the background (setsid, stdio to /dev/null). Must run before
/// any thread is started.
///
/// # Errors
/// fork or setsid failed.
pub fn daemonize() -> anyhow::Result<()> {
    unistd::daemon(true, false).context("daemon(3)")?;
    Ok(())
}
