//! What users change through the daemon and what survives its restart: each profile's PQ-only
//! switch. A JSON file in the daemon's state directory (mode 600, replaced atomically).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Settings {
    /// Profiles whose PQ-only switch is on.
    #[serde(default)]
    pub(crate) pq_only: BTreeMap<String, bool>,
}

impl Settings {
    fn path(dir: &Path) -> PathBuf {
        dir.join("settings.json")
    }

    /// The settings in `dir`; defaults (with a warning) when the file is missing or broken.
    pub(crate) fn load(dir: &Path) -> Self {
        match std::fs::read_to_string(Self::path(dir)) {
            Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                eprintln!("pqvpn: ignoring {}: {e}", Self::path(dir).display());
                Self::default()
            }),
            Err(_) => Self::default(),
        }
    }

    /// Writes the settings to `dir` (created mode 700) through a temporary file and a rename.
    pub(crate) fn save(&self, dir: &Path) -> Result<(), String> {
        use std::io::Write as _;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("Failed to create {}: {e}", dir.display()))?;
        let path = Self::path(dir);
        let tmp = dir.join(".settings.json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| format!("Failed to write {}: {e}", tmp.display()))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| format!("Failed to write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| format!("Failed to replace {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn settings_round_trip_privately_and_survive_garbage() {
        let dir = std::env::temp_dir().join(format!("pqvpn-settings-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(Settings::load(&dir), Settings::default());
        let mut settings = Settings::default();
        settings.pq_only.insert("work".into(), true);
        settings.save(&dir).unwrap();
        assert_eq!(Settings::load(&dir), settings);
        let mode = std::fs::metadata(Settings::path(&dir))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(Settings::path(&dir), "{not json").unwrap();
        assert_eq!(Settings::load(&dir), Settings::default());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
