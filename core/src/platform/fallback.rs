//! Systems without an implementation: every entry point reports [`Error::Unsupported`].

use std::path::Path;

use super::state::StateFile;
use super::{Error, NetworkConfig, Tun, TunConfig};

pub(super) fn create_tun(_config: &TunConfig) -> Result<Tun, Error> {
    Err(Error::Unsupported("create a TUN device"))
}

pub(super) fn apply(_config: &NetworkConfig, _state_dir: &Path) -> Result<StateFile, Error> {
    Err(Error::Unsupported("configure routes and DNS"))
}

pub(super) fn restore(_state: StateFile) -> Result<(), Error> {
    Err(Error::Unsupported("restore routes and DNS"))
}
