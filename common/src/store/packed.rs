//! The raw payload as an event item keeps it: DEFLATE (RFC 1951) primed with a preset
//! dictionary of the provider's payload shape, so that an item stays within one DynamoDB write
//! unit (1 KB). A webhook body is mostly its provider's field names and layout; a dictionary
//! that holds them (every value emptied, `dictionaries/`, made by `scripts/make-dictionary`)
//! leaves DEFLATE little but the values to pack: Conscent.ai's 1.3 KB payloads pack to about
//! 300 bytes instead of 550 (bench/README.md, "Write units per webhook").
//!
//! The stored bytes are `[dictionary id][DEFLATE stream]`. Items keep the id for as long as
//! they live, so a dictionary never changes once shipped and an id is never reused: a better
//! dictionary is a new id, and every id stays readable. Id 0 is DEFLATE without one.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::event::Provider;

struct Dictionary {
    id: u8,
    provider: Provider,
    bytes: &'static [u8],
}

/// Every dictionary ever shipped, as the providers' descriptors declare them; a provider packs
/// with the last of its own.
fn dictionaries() -> impl DoubleEndedIterator<Item = Dictionary> {
    Provider::ALL.into_iter().flat_map(|provider| {
        provider.descriptor().dictionaries.iter().map(move |&(id, bytes)| Dictionary { id, provider, bytes })
    })
}

const NO_DICTIONARY: u8 = 0;

/// A stored payload never inflates beyond this: bodies are refused above 384 KiB, so anything
/// bigger is a corrupt item, not a payload.
pub const MAX_INFLATED: usize = 1 << 20;

/// `raw` packed with `provider`'s dictionary (or none), or `None` when the codec fails, which
/// leaves the caller to keep the text.
pub fn pack(provider: Provider, raw: &[u8]) -> Option<Vec<u8>> {
    let (id, dictionary) =
        dictionaries().rev().find(|d| d.provider == provider).map_or((NO_DICTIONARY, &[][..]), |d| (d.id, d.bytes));
    let mut out = Vec::with_capacity(raw.len() / 2 + 64);
    out.push(id);
    deflate(raw, dictionary, &mut out).then_some(out)
}

/// The bytes `pack` was given, or why they cannot be had: an unknown dictionary, a stream that
/// does not inflate, or one that would inflate beyond `MAX_INFLATED`.
pub fn unpack(packed: &[u8]) -> Result<Vec<u8>, String> {
    let (&id, stream) = packed.split_first().ok_or("empty")?;
    let dictionary = match id {
        NO_DICTIONARY => &[][..],
        _ => dictionaries().find(|d| d.id == id).ok_or(format!("unknown dictionary {id}"))?.bytes,
    };
    inflate(stream, dictionary)
}

thread_local! {
    /// One compressor per thread, reset for each payload: its state (about 270 KB) would
    /// otherwise be allocated and zeroed for every webhook.
    static COMPRESSOR: RefCell<Compress> = RefCell::new(new_compressor());
}

fn new_compressor() -> Compress {
    Compress::new_with_window_bits(Compression::best(), false, 15)
}

/// Raw DEFLATE (no zlib header: the id says which dictionary), best compression.
fn deflate(raw: &[u8], dictionary: &[u8], out: &mut Vec<u8>) -> bool {
    COMPRESSOR.with_borrow_mut(|codec| {
        codec.reset();
        let packed = deflate_with(codec, raw, dictionary, out);
        if !packed {
            // Whatever state a failure left behind is not reused.
            *codec = new_compressor();
        }
        packed
    })
}

fn deflate_with(codec: &mut Compress, raw: &[u8], dictionary: &[u8], out: &mut Vec<u8>) -> bool {
    if !dictionary.is_empty() && codec.set_dictionary(dictionary).is_err() {
        return false;
    }
    loop {
        let input = &raw[codec.total_in() as usize..];
        match codec.compress_vec(input, out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) => return true,
            Ok(_) => out.reserve(out.capacity().max(64)),
            Err(_) => return false,
        }
    }
}

/// Raw DEFLATE back, never beyond `MAX_INFLATED` bytes.
pub(crate) fn inflate(stream: &[u8], dictionary: &[u8]) -> Result<Vec<u8>, String> {
    let mut codec = Decompress::new_with_window_bits(false, 15);
    if !dictionary.is_empty() {
        codec.set_dictionary(dictionary).map_err(|e| e.to_string())?;
    }
    let mut out = Vec::with_capacity((stream.len() * 4).clamp(64, MAX_INFLATED));
    loop {
        let progress = (codec.total_in(), codec.total_out());
        let input = &stream[codec.total_in() as usize..];
        match codec.decompress_vec(input, &mut out, FlushDecompress::Finish).map_err(|e| e.to_string())? {
            Status::StreamEnd => return Ok(out),
            _ if out.len() >= MAX_INFLATED => return Err(format!("inflates beyond {MAX_INFLATED} bytes")),
            _ if out.len() < out.capacity() && progress == (codec.total_in(), codec.total_out()) => {
                return Err("truncated".into());
            }
            _ => out.reserve_exact(out.capacity().min(MAX_INFLATED - out.len())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn what_is_packed_comes_back_byte_for_byte_with_and_without_a_dictionary() {
        let bodies: [&[u8]; 4] = [b"", b"ok=1", "caf\u{e9} \u{1f4b8}".as_bytes(), &[0xff, 0x00, 0xfe, b'{']];
        for provider in Provider::ALL {
            for body in bodies {
                assert_eq!(unpack(&pack(provider, body).unwrap()).unwrap(), body, "{provider}");
            }
            let long = format!("{{\"refund\":{{\"amount\":1,\"id\":\"{}\"}}}}", "ab".repeat(70_000));
            assert_eq!(unpack(&pack(provider, long.as_bytes()).unwrap()).unwrap(), long.as_bytes());
        }
        let mut plain = vec![NO_DICTIONARY];
        assert!(deflate(b"no dictionary at all", &[], &mut plain));
        assert_eq!(unpack(&plain).unwrap(), b"no dictionary at all");
    }

    /// The compressor is reused across payloads: each one packs exactly as a new compressor
    /// packs it, whatever came before.
    #[test]
    fn a_reused_compressor_packs_as_a_new_one_does() {
        let bodies: [&[u8]; 3] = [br#"{"event":"refunded.pass","user_id":"65e0"}"#, b"", &[b'x'; 70_000]];
        for provider in Provider::ALL {
            for body in bodies {
                let (id, dictionary) = dictionaries()
                    .rev()
                    .find(|d| d.provider == provider)
                    .map_or((NO_DICTIONARY, &[][..]), |d| (d.id, d.bytes));
                let mut fresh = vec![id];
                assert!(deflate_with(&mut new_compressor(), body, dictionary, &mut fresh));
                assert_eq!(pack(provider, body).unwrap(), fresh, "{provider}");
                assert_eq!(pack(provider, body).unwrap(), fresh, "{provider}, packed again");
            }
        }
    }

    #[test]
    fn a_dictionary_packs_a_providers_body_smaller() {
        let body = br#"{"event":"order.refunded","order":{"uuid":"4DACB7B0","total":9900,"currency":"USD","member":{"email":"a@b.c"}}}"#;
        let mut plain = Vec::new();
        assert!(deflate(body, &[], &mut plain));
        let packed = pack(Provider::Memberful, body).unwrap();
        assert!(packed.len() < plain.len(), "{} against {}", packed.len(), plain.len());
    }

    #[test]
    fn a_corrupt_truncated_unknown_or_oversized_stream_is_an_error() {
        assert!(unpack(b"").is_err());
        assert!(unpack(b"\x00\xff\xff not deflate").is_err());
        assert_eq!(unpack(b"\xeesomething").unwrap_err(), "unknown dictionary 238");
        let packed =
            pack(Provider::Conscent, br#"{"entity":"event","event":"refunded.pass","user_id":"65e0"}"#).unwrap();
        assert!(unpack(&packed[..packed.len() - 2]).is_err(), "truncated");
        // The same stream read with another dictionary does not come back as it went in.
        let mut other = packed.clone();
        other[0] = 1;
        assert_ne!(unpack(&other).ok().as_deref(), unpack(&packed).ok().as_deref());
        // A bomb beyond any accepted body is refused, not inflated.
        let mut bomb = vec![NO_DICTIONARY];
        assert!(deflate(&vec![b'a'; MAX_INFLATED + 1], &[], &mut bomb));
        assert!(bomb.len() < 2048);
        assert!(unpack(&bomb).unwrap_err().contains("beyond"));
    }

    /// Stored items name these dictionaries for as long as they live: a changed one would turn
    /// every item packed with it into a different payload. Ship a new file with a new id instead.
    #[test]
    fn a_shipped_dictionary_never_changes_and_an_id_is_never_reused() {
        let fingerprints = [
            (1, "a1ef77a9004eba501c79dac3b6433c9d8162cd461711a5136c2448b3145a6ec5"),
            (2, "fc0d7714a998c82804be4266fec848a6b6799474f9bab71212f9f12e93bf631b"),
            (3, "61fab8e85349f9d1b7dee3a24dec88b32ad61659cbf4fb2f41db2d8b0f2cc9d8"),
            (4, "02e3ab125c3040469448bad1bd1933ee12827097570725571dc1d4768695598a"),
            (5, "37766db023ee15791ea56de27d9b44acf328111e460d7149aaeddd11a9c39675"),
        ];
        let actual: Vec<(u8, String)> = dictionaries().map(|d| (d.id, hex::encode(Sha256::digest(d.bytes)))).collect();
        let expected: Vec<(u8, String)> = fingerprints.iter().map(|(id, f)| (*id, f.to_string())).collect();
        assert_eq!(actual, expected);
        assert!(dictionaries().all(|d| d.id != NO_DICTIONARY && d.bytes.len() <= 32 * 1024));
        let mut ids: Vec<u8> = dictionaries().map(|d| d.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), dictionaries().count(), "two dictionaries with one id");
    }
}
