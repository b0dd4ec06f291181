//! The peer's INFORMATIONAL requests ([RFC 7296 §1.4]): an empty one is a liveness check
//! ([RFC 7296 §2.4]); Delete of Child SAs is answered with ours ([RFC 7296 §1.4.1]); Delete of
//! the IKE SA ends it.
//!
//! [RFC 7296 §1.4]: https://www.rfc-editor.org/rfc/rfc7296#section-1.4
//! [RFC 7296 §1.4.1]: https://www.rfc-editor.org/rfc/rfc7296#section-1.4.1
//! [RFC 7296 §2.4]: https://www.rfc-editor.org/rfc/rfc7296#section-2.4

use std::time::Instant;

use crate::ike::Error;
use crate::wire::{DeletePayload, EspSpi, Payload, ProtocolId};

use super::Session;
use super::child::ChildState;
use super::exchange::After;
use super::ike_sa::IkeSa;

impl Session {
    /// INFORMATIONAL: liveness checks get an empty answer; Delete of Child SAs is answered
    /// with the Delete of our halves; Delete of the IKE SA ends it (RFC 7296 §1.4.1).
    pub(super) fn on_informational(
        &mut self,
        now: Instant,
        sa: &mut IkeSa,
        payloads: &[Payload],
    ) -> Result<(Vec<Payload>, After), Error> {
        let mut ours = Vec::new();
        for p in payloads {
            let Payload::Delete(d) = p else {
                continue;
            };
            match d.protocol_id {
                ProtocolId::Ike => return Ok((Vec::new(), After::DropSa)),
                ProtocolId::Esp => {
                    for spi in &d.spis {
                        let Ok(spi) = <[u8; 4]>::try_from(spi.as_slice()) else {
                            continue;
                        };
                        let peer_spi = EspSpi(u32::from_be_bytes(spi));
                        let Some(c) = self.children.by_peer_spi(self.view, peer_spi) else {
                            continue;
                        };
                        let pair = c.sa.id();
                        // If we are deleting it too, our request carries our half already.
                        if !matches!(c.state, ChildState::Deleting) {
                            ours.push(self.view.ours_theirs(pair).0);
                        }
                        self.remove_child(now, pair);
                    }
                }
                _ => {}
            }
        }
        let _ = sa;
        let inner = if ours.is_empty() {
            Vec::new()
        } else {
            vec![Payload::Delete(DeletePayload::esp(&ours))]
        };
        Ok((inner, After::Nothing))
    }
}
