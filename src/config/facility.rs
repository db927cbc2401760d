//! facilities.conf → [`FacilityDb`]. STUB: the config helper replaces it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::ConfigError;
use crate::rotation::schedule::Schedule;

/// One facility: an app's root or a module of it (SPEC §2).
#[derive(Clone)]
pub struct Facility {
    pub app_id: String,
    /// `""` for the root facility, else the dotted path without `root.`.
    pub module: String,
    pub rotate: Schedule,
    pub backup_count: u32,
    pub max_size: Option<u64>,
    pub flush_every: u32,
    pub file_per_host: bool,
    pub secret: Option<String>,
}

/// Every configured facility, looked up by app and module.
#[derive(Debug, Default)]
pub struct FacilityDb {
    apps: HashMap<String, HashMap<String, Arc<Facility>>>,
}

impl std::fmt::Debug for Facility {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Facility")
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

impl FacilityDb {
    /// Reads and validates facilities.conf.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, section and fix.
    pub fn load(path: &Path) -> Result<FacilityDb, ConfigError> {
        let _ = path;
        todo!()
    }

    /// The most specific facility for `module` (already normalized: no
    /// leading `root`), or `None` when the app is unknown.
    pub fn lookup(&self, app_id: &str, module: &str) -> Option<&Arc<Facility>> {
        let app = self.apps.get(app_id)?;
        let mut m = module;
        loop {
            if let Some(f) = app.get(m) {
                return Some(f);
            }
            match m.rfind('.') {
                Some(i) => m = &m[..i],
                None if !m.is_empty() => m = "",
                None => return None,
            }
        }
    }
}
