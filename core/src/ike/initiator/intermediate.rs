//! The initiator's IKE_INTERMEDIATE rounds, one per additional key exchange ([RFC 9370
//! §2.2.2]): KEi(n) out, KEr(n) back, then the key update that the next round or IKE_AUTH is
//! protected with ([RFC 9242 §3.3]).
//!
//! [RFC 9242 §3.3]: https://www.rfc-editor.org/rfc/rfc9242#section-3.3
//! [RFC 9370 §2.2.2]: https://www.rfc-editor.org/rfc/rfc9370#section-2.2.2

use std::time::Instant;

use super::{ExpectIntermediateResponse, Initiator, State};
use crate::ike::Error;
use crate::ike::handshake::Keyed;
use crate::ike::sa::first_error_notify;
use crate::wire::{ExchangeType, Flags, Header, KePayload, KeyExchangeMethod, Payload};

impl Initiator {
    /// After a key update: the next IKE_INTERMEDIATE round, or IKE_AUTH.
    pub(super) fn next_after_keys(
        &mut self,
        now: Instant,
        keyed: Keyed,
        round: usize,
    ) -> Result<State, Error> {
        match keyed.choice.addke.get(round) {
            Some(&method) => self.send_intermediate(now, keyed, round, method),
            None => self.send_auth(now, keyed),
        }
    }

    fn send_intermediate(
        &mut self,
        now: Instant,
        mut keyed: Keyed,
        round: usize,
        method: KeyExchangeMethod,
    ) -> Result<State, Error> {
        let ke = self.provider.start_key_exchange(method)?;
        let message_id = keyed.take_message_id();
        let header = Header::new(
            keyed.spis.spi_i,
            keyed.spis.spi_r,
            ExchangeType::IkeIntermediate,
            Flags::initiator_request(),
            message_id,
        );
        #[cfg_attr(not(test), expect(unused_mut, reason = "altered by test faults"))]
        let mut data = ke.public_value().to_vec();
        #[cfg(test)]
        if self.fault_bad_encapsulation_key {
            // The first 12-bit coefficient becomes 0xFFF, above q = 3329.
            data[0] = 0xff;
            data[1] |= 0x0f;
        }
        let inner = [Payload::Ke(KePayload { method, data })];
        let max = self.max_message(&keyed);
        let protected = keyed.cipher.protect(&header, &inner, max)?;
        self.send_request(now, message_id, protected.datagrams);
        Ok(State::ExpectIntermediateResponse(
            ExpectIntermediateResponse {
                keyed,
                round,
                ke,
                request_a: protected.int_auth_a,
                request_p: protected.plaintext,
            },
        ))
    }

    pub(super) fn on_intermediate_response(
        &mut self,
        now: Instant,
        s: ExpectIntermediateResponse,
        datagram: &[u8],
    ) -> Result<State, Error> {
        let Some(response) = self.open(&s.keyed, datagram)? else {
            return Ok(State::ExpectIntermediateResponse(s));
        };
        let ExpectIntermediateResponse {
            mut keyed,
            round,
            ke,
            request_a,
            request_p,
        } = s;
        if let Some(error) = first_error_notify(&response.payloads) {
            return Err(Error::NotifyReceived(error));
        }
        let ker = response
            .payloads
            .iter()
            .find_map(|p| match p {
                Payload::Ke(k) => Some(k),
                _ => None,
            })
            .ok_or(Error::MissingPayload("KE"))?;
        if ker.method != ke.method() {
            return Err(Error::WrongKeyExchangeMethod {
                expected: ke.method(),
                got: ker.method,
            });
        }
        // FIPS 203 §7.3 ciphertext check inside `complete`; failure aborts the SA before
        // IKE_AUTH (draft-ietf-ipsecme-ikev2-mlkem §2.2).
        let shared = ke.complete(&ker.data)?;
        self.outstanding = None;
        // Both IntAuth values use the keys that protected the exchange (RFC 9242 §3.3.2).
        keyed.after_intermediate(
            &*self.provider,
            &shared,
            (&request_a, &request_p),
            (&response.int_auth_a, &response.plaintext),
        )?;
        self.next_after_keys(now, keyed, round + 1)
    }
}
