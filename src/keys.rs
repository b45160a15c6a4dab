//! The master key, and where it comes from.
//!
//! The master key (32 bytes) is the key-encryption key's root: content keys are wrapped under
//! a KEK derived from it, and purpose-specific secrets (token signing, storage URLs) are
//! derived from it too, so no two features share key material.
//!
//! A [`KeyProvider`] hands out the current master key and the earlier ones still accepted.
//! Two ship here: [`FileProvider`] (`KEYS_DIR/master.key`, hex, mode 0600, created on first
//! start; earlier keys in `KEYS_DIR/previous/`) and [`EnvProvider`] (configuration, i.e. an
//! environment variable). A cloud KMS plugs in as a third: it keeps the master key wrapped
//! by the KMS at rest and unwraps it in `load`, so the key never sits in clear on disk.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

pub const MASTER_KEY_FILE: &str = "master.key";
const PREVIOUS_DIR: &str = "previous";
/// Seconds after a rotation before previous keys may be retired.
pub const RETIRE_AFTER_S: i64 = 90;

/// The master key; `Debug` never prints it.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({})", self.fingerprint())
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// 64 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        hex::decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .map(Self)
    }

    fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self(key)
    }

    /// A public name for the key (a hash of a hash: reveals nothing).
    pub fn fingerprint(&self) -> String {
        hex::encode(&Sha256::digest(Sha256::digest(self.0))[..6])
    }

    /// Reads `dir/master.key`, creating the folder and the key if they do not exist.
    /// Returns the key and whether it was created now.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<(Self, bool)> {
        let path = dir.join(MASTER_KEY_FILE);
        match read_key_file(&path) {
            Ok(key) => Ok((key, false)),
            Err(e)
                if e.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) =>
            {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating key folder {}", dir.display()))?;
                let key = Self::generate();
                write_key_file(&path, &key)?;
                Ok((key, true))
            }
            Err(e) => Err(e),
        }
    }

    /// A 32-byte secret for one purpose, e.g. `"storage-url/v1"`.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        mac.update(b"ferrocast/");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

fn read_key_file(path: &Path) -> anyhow::Result<MasterKey> {
    let text = std::fs::read_to_string(path)?;
    warn_if_readable_by_others(path);
    MasterKey::from_hex(&text)
        .with_context(|| format!("{} must hold 64 hex digits (32 bytes)", path.display()))
}

fn write_key_file(path: &Path, key: &MasterKey) -> anyhow::Result<()> {
    let mut file =
        open_new_private(path).with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{}", hex::encode(key.0))?;
    file.sync_all()?;
    Ok(())
}

/// The current master key and the earlier ones still accepted (newest first).
#[derive(Clone, Debug)]
pub struct Keyring {
    pub current: MasterKey,
    pub previous: Vec<MasterKey>,
}

impl Keyring {
    /// Current first.
    pub fn all(&self) -> impl Iterator<Item = &MasterKey> {
        std::iter::once(&self.current).chain(self.previous.iter())
    }
}

/// Where master keys come from. `load` is called at start and again when a key id is met
/// that the loaded keyring does not know (another process rotated), so it must be cheap.
pub trait KeyProvider: Send + Sync + fmt::Debug {
    fn name(&self) -> &'static str;
    /// The keyring, creating a first key if the provider can and none exists.
    /// The flag says a key was created now.
    fn load(&self) -> anyhow::Result<(Keyring, bool)>;
    /// Makes a new current key; the old one becomes previous (still accepted).
    fn rotate(&self) -> anyhow::Result<Keyring>;
    /// Forgets every previous key; returns how many.
    fn retire_previous(&self) -> anyhow::Result<usize>;
}

/// `KEYS_DIR/master.key`, earlier keys in `KEYS_DIR/previous/master-<unix ms>.key`.
#[derive(Debug)]
pub struct FileProvider {
    dir: PathBuf,
}

impl FileProvider {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    fn previous_files(&self) -> anyhow::Result<Vec<PathBuf>> {
        let dir = self.dir.join(PREVIOUS_DIR);
        let mut files = match std::fs::read_dir(&dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "key"))
                .collect::<Vec<_>>(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        files.sort();
        files.reverse(); // newest first (names hold the time)
        Ok(files)
    }
}

impl KeyProvider for FileProvider {
    fn name(&self) -> &'static str {
        "file"
    }

    fn load(&self) -> anyhow::Result<(Keyring, bool)> {
        let (current, created) = MasterKey::load_or_create(&self.dir)?;
        let previous = self
            .previous_files()?
            .iter()
            .map(|p| read_key_file(p))
            .collect::<anyhow::Result<_>>()?;
        Ok((Keyring { current, previous }, created))
    }

    fn rotate(&self) -> anyhow::Result<Keyring> {
        let (old, _) = self.load()?;
        let prev_dir = self.dir.join(PREVIOUS_DIR);
        std::fs::create_dir_all(&prev_dir)
            .with_context(|| format!("creating {}", prev_dir.display()))?;
        // Named by the time of the rotation; two rotations in one millisecond take the next.
        let mut at = crate::clock::now_ms();
        let kept = loop {
            let path = prev_dir.join(format!("master-{at:013}.key"));
            if !path.exists() {
                break path;
            }
            at += 1;
        };
        write_key_file(&kept, &old.current)?;
        // The new key is written beside the old and renamed over it: a crash leaves either.
        let new = MasterKey::generate();
        let tmp = self.dir.join("master.key.new");
        let _ = std::fs::remove_file(&tmp);
        write_key_file(&tmp, &new)?;
        std::fs::rename(&tmp, self.dir.join(MASTER_KEY_FILE)).context("replacing master.key")?;
        Ok(self.load()?.0)
    }

    fn retire_previous(&self) -> anyhow::Result<usize> {
        let files = self.previous_files()?;
        // Running servers re-read the keys every 30 s; until they have, one may still wrap
        // new content keys under the previous key.
        let newest_ms = files.first().and_then(|f| {
            f.file_stem()?
                .to_str()?
                .strip_prefix("master-")?
                .parse::<i64>()
                .ok()
        });
        if let Some(t) = newest_ms {
            let age_s = (crate::clock::now_ms() - t) / 1000;
            if age_s < RETIRE_AFTER_S {
                anyhow::bail!(
                    "the master key was rotated {age_s} s ago; running servers switch to it within \
                     30 s: retry in {} s",
                    RETIRE_AFTER_S - age_s
                );
            }
        }
        for f in &files {
            std::fs::remove_file(f).with_context(|| format!("removing {}", f.display()))?;
        }
        Ok(files.len())
    }
}

/// Keys from configuration (`keys.master_key`, `keys.previous_master_keys`), typically set
/// through the environment by a secrets manager. Rotation happens there.
#[derive(Debug)]
pub struct EnvProvider {
    keyring: Keyring,
}

impl EnvProvider {
    pub fn new(current_hex: &str, previous_hex: &str) -> anyhow::Result<Self> {
        let current =
            MasterKey::from_hex(current_hex).context("keys.master_key must be 64 hex digits")?;
        let previous = previous_hex
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| {
                MasterKey::from_hex(k).context("keys.previous_master_keys: 64 hex digits each")
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            keyring: Keyring { current, previous },
        })
    }
}

impl KeyProvider for EnvProvider {
    fn name(&self) -> &'static str {
        "env"
    }

    fn load(&self) -> anyhow::Result<(Keyring, bool)> {
        Ok((self.keyring.clone(), false))
    }

    fn rotate(&self) -> anyhow::Result<Keyring> {
        // The new key is already current (it came from the environment); what is left is
        // re-wrapping, which the caller does.
        Ok(self.keyring.clone())
    }

    fn retire_previous(&self) -> anyhow::Result<usize> {
        anyhow::bail!(
            "keys come from the environment: remove them from FERROCAST_KEYS_PREVIOUS_MASTER_KEYS and restart"
        )
    }
}

/// The provider the configuration names.
pub fn provider(config: &crate::config::KeysConfig) -> anyhow::Result<Box<dyn KeyProvider>> {
    Ok(match config.provider {
        crate::config::KeyProvider::File => Box::new(FileProvider::new(&config.dir)),
        crate::config::KeyProvider::Env => Box::new(EnvProvider::new(
            config.master_key.expose(),
            config.previous_master_keys.expose(),
        )?),
    })
}

#[cfg(unix)]
fn open_new_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_new_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path)
        && m.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "master key is readable by other users; chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_key_is_created_once_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let (a, created) = MasterKey::load_or_create(&keys).unwrap();
        assert!(created);
        let (b, created) = MasterKey::load_or_create(&keys).unwrap();
        assert!(!created);
        assert_eq!(a.0, b.0);
        assert_ne!(a.derive("x"), a.derive("y"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(keys.join(MASTER_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!format!("{a:?}").contains(&hex::encode(a.0)));
    }

    #[test]
    fn rotation_keeps_the_old_key_as_previous_until_retired() {
        let dir = tempfile::tempdir().unwrap();
        let p = FileProvider::new(dir.path());
        let (first, created) = p.load().unwrap();
        assert!(created && first.previous.is_empty());
        let second = p.rotate().unwrap();
        assert_ne!(second.current.0, first.current.0);
        assert_eq!(second.previous.len(), 1);
        assert_eq!(second.previous[0].0, first.current.0);
        let third = p.rotate().unwrap();
        assert_eq!(third.previous.len(), 2);
        assert_eq!(
            third.previous[0].0, second.current.0,
            "newest previous first"
        );
        let (reloaded, created) = p.load().unwrap();
        assert!(!created);
        assert_eq!(reloaded.current.0, third.current.0);
        assert!(p.retire_previous().is_err(), "too soon after the rotation");
        for f in p.previous_files().unwrap() {
            let old = f.with_file_name(format!("master-{:013}.key", 1));
            let old = if old.exists() {
                f.with_file_name(format!("master-{:013}.key", 2))
            } else {
                old
            };
            std::fs::rename(&f, old).unwrap();
        }
        assert_eq!(p.retire_previous().unwrap(), 2);
        assert!(p.load().unwrap().0.previous.is_empty());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let f = dir.path().join(MASTER_KEY_FILE);
            let mode = std::fs::metadata(f).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn the_env_provider_takes_hex_keys() {
        let a = "11".repeat(32);
        let b = "22".repeat(32);
        let p = EnvProvider::new(&a, &format!(" {b} ,")).unwrap();
        let (ring, created) = p.load().unwrap();
        assert!(!created);
        assert_eq!(ring.current.0, [0x11; 32]);
        assert_eq!(ring.previous.len(), 1);
        assert!(EnvProvider::new("abc", "").is_err());
        assert!(p.retire_previous().is_err());
    }

    #[test]
    fn a_corrupt_key_file_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MASTER_KEY_FILE), "not hex").unwrap();
        let e = MasterKey::load_or_create(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("64 hex digits"), "{e}");
    }
}
