//! Wire formats of the two rdht stream protocols: block streaming and record exchange,
//! plus the Kademlia provider keys (CIDv1s other libp2p implementations accept).
//!
//! Owns: protocol names, message layouts and their size limits; async readers and
//! writers over any `AsyncRead`/`AsyncWrite`. Does not own: verification of block
//! contents (rdht-core's `DagVerifier`) or of records (`BuildRecord::decode`), nor who
//! to talk to. Read first: [`Frame`], [`read_frame`], [`ProviderKey::to_bytes`]. Spec:
//! `specs/swarm.md` §3–§4, §6.1.

use bytes::BytesMut;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use rdht_core::record::MAX_RECORD_LEN;
use rdht_core::{BlockId, BuildKey, Encoded, MAX_BLOCK_LEN};

/// The block streaming protocol.
pub const BLOCKS_PROTOCOL: StreamProtocol = StreamProtocol::new("/rdht/blocks/1");
/// The build record protocol.
pub const RECORDS_PROTOCOL: StreamProtocol = StreamProtocol::new("/rdht/records/1");
/// The Kademlia protocol name (keeps rdht's DHT apart from IPFS's). Version 2: provider
/// keys are CIDv1s ([`ProviderKey::to_bytes`]); version 1's were a tag and an id.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/rdht/kad/2.0.0");
/// The identify protocol version string.
pub const IDENTIFY_VERSION: &str = "/rdht/1.0.0";
/// The version byte opening every request.
pub const WIRE_VERSION: u8 = 1;
/// The version byte of a block request whose sender also takes LZ4 frames
/// ([`TAG_LZ4`]); version 1 asks for raw frames only.
pub const BLOCKS_VERSION_LZ4: u8 = 2;
/// Most subtree roots one block request may name.
pub const MAX_WANTS: usize = 8192;
/// Most records one record response may carry.
pub const MAX_RECORDS: usize = 64;

/// Frame tag: a block follows.
pub const TAG_BLOCK: u8 = 0x00;
/// Frame tag: the sender lacks the named block; the stream ends.
pub const TAG_MISSING: u8 = 0x01;
/// Frame tag: every requested subtree was sent; the stream ends.
pub const TAG_END: u8 = 0x02;
/// Frame tag: an LZ4-encoded leaf follows (specs/blocks.md §8).
pub const TAG_LZ4: u8 = 0x03;

/// Provider-key namespace tag for build keys.
pub const KEY_TAG_BUILD: u8 = 0x01;
/// Provider-key namespace tag for artifact roots.
pub const KEY_TAG_ARTIFACT: u8 = 0x02;
/// CID version of a provider key.
pub const CID_VERSION: u8 = 0x01;
/// Multicodec of a provider key's CID: `raw`, since its digest hashes the 33 bytes of
/// [`ProviderKey::tagged`] as they are.
pub const CID_CODEC_RAW: u8 = 0x55;
/// Multihash code of BLAKE3 (here with a 32-byte digest).
pub const MULTIHASH_BLAKE3: u8 = 0x1e;
/// Length of a provider key on the wire.
pub const PROVIDER_KEY_LEN: usize = 36;

/// What a node announces as a Kademlia provider record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKey {
    /// "I hold a record for this build key."
    Build(BuildKey),
    /// "I hold every block of this artifact."
    Artifact(BlockId),
}

impl ProviderKey {
    /// What the key's digest hashes: the namespace tag, then the 32-byte id (version
    /// 1's whole DHT key).
    pub fn tagged(&self) -> [u8; 33] {
        let (tag, id) = match self {
            ProviderKey::Build(k) => (KEY_TAG_BUILD, k.as_bytes()),
            ProviderKey::Artifact(r) => (KEY_TAG_ARTIFACT, r.as_bytes()),
        };
        let mut out = [0u8; 33];
        out[0] = tag;
        out[1..].copy_from_slice(id);
        out
    }

    /// The 36-byte DHT key, a binary CIDv1: version 1, codec `raw`, then the multihash
    /// BLAKE3 (0x1e, 32 bytes) of [`Self::tagged`]. The kinds differ in the digest, not
    /// in the codec, because js-libp2p keys its provider store by the multihash alone
    /// (specs/swarm.md §6.1).
    pub fn to_bytes(&self) -> [u8; PROVIDER_KEY_LEN] {
        // Every field before the digest is a constant below 0x80: a one-byte varint.
        let mut out = [0u8; PROVIDER_KEY_LEN];
        out[..4].copy_from_slice(&[CID_VERSION, CID_CODEC_RAW, MULTIHASH_BLAKE3, 32]);
        out[4..].copy_from_slice(blake3::hash(&self.tagged()).as_bytes());
        out
    }

    pub(crate) fn kad_key(&self) -> libp2p::kad::RecordKey {
        libp2p::kad::RecordKey::new(&self.to_bytes())
    }
}

impl std::fmt::Display for ProviderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProviderKey::Build(k) => write!(f, "build:{k}"),
            ProviderKey::Artifact(r) => write!(f, "artifact:{r}"),
        }
    }
}

/// A message broke the wire format. `Io` with `UnexpectedEof` means "incomplete"; the
/// other variants mean "invalid".
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The stream failed or ended early.
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
    /// A request with an unknown version byte.
    #[error("unsupported wire version {0}")]
    Version(u8),
    /// A count or length over its limit (or zero where zero is not allowed).
    #[error("{what} is {value}, outside 1..={max}")]
    Limit {
        /// What was counted.
        what: &'static str,
        /// The value received.
        value: u64,
        /// The limit.
        max: u64,
    },
    /// A frame with an unknown tag.
    #[error("unknown frame tag {0:#04x}")]
    Tag(u8),
}

impl WireError {
    /// True when the peer broke the format (as opposed to the stream failing).
    pub fn is_violation(&self) -> bool {
        !matches!(self, WireError::Io(_))
    }
}

async fn read_u32<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).await?;
    Ok(u32::from_le_bytes(b))
}

async fn read_id<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<[u8; 32]> {
    let mut b = [0u8; 32];
    r.read_exact(&mut b).await?;
    Ok(b)
}

fn limit(what: &'static str, value: u64, max: usize) -> Result<(), WireError> {
    if value == 0 || value > max as u64 {
        return Err(WireError::Limit {
            what,
            value,
            max: max as u64,
        });
    }
    Ok(())
}

/// A block request as read by the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRequest {
    /// Subtree roots, in the order to stream them.
    pub wants: Vec<BlockId>,
    /// The requester takes LZ4 frames (version 2).
    pub lz4: bool,
}

/// Block request: `version u8 | count u32le | count × 32-byte subtree root`. This
/// implementation always sends version 2 (LZ4 frames welcome).
pub fn encode_block_request(wants: &[BlockId]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + 32 * wants.len());
    out.push(BLOCKS_VERSION_LZ4);
    out.extend_from_slice(&(wants.len() as u32).to_le_bytes());
    for w in wants {
        out.extend_from_slice(w.as_bytes());
    }
    out
}

/// Reads a block request (version 1 or 2, at most [`MAX_WANTS`] roots).
pub async fn read_block_request<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<BlockRequest, WireError> {
    let mut v = [0u8; 1];
    r.read_exact(&mut v).await?;
    let lz4 = match v[0] {
        WIRE_VERSION => false,
        BLOCKS_VERSION_LZ4 => true,
        other => return Err(WireError::Version(other)),
    };
    let count = read_u32(r).await?;
    limit("want count", count.into(), MAX_WANTS)?;
    let mut wants = Vec::with_capacity(count as usize);
    for _ in 0..count {
        wants.push(BlockId::from_bytes(read_id(r).await?));
    }
    Ok(BlockRequest { wants, lz4 })
}

/// One frame of a block response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The next block in pre-order: raw, `0x00 | len u32le | len bytes` (1..=16,385
    /// bytes), or LZ4, `0x03 | len u32le | raw_len u32le | len bytes` (both 1..=16,385).
    Block(Encoded),
    /// `0x01 | 32-byte id`: the sender lacks this block; nothing follows.
    Missing(BlockId),
    /// `0x02`: everything requested was sent; nothing follows.
    End,
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &Frame) -> std::io::Result<()> {
    match frame {
        Frame::Block(Encoded::Raw(bytes)) => {
            let mut head = [TAG_BLOCK, 0, 0, 0, 0];
            head[1..].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
            w.write_all(&head).await?;
            w.write_all(bytes).await
        }
        Frame::Block(Encoded::Lz4 { data, raw_len }) => {
            let mut head = [TAG_LZ4, 0, 0, 0, 0, 0, 0, 0, 0];
            head[1..5].copy_from_slice(&(data.len() as u32).to_le_bytes());
            head[5..].copy_from_slice(&raw_len.to_le_bytes());
            w.write_all(&head).await?;
            w.write_all(data).await
        }
        Frame::Missing(id) => {
            w.write_all(&[TAG_MISSING]).await?;
            w.write_all(id.as_bytes()).await
        }
        Frame::End => w.write_all(&[TAG_END]).await,
    }
}

/// Reads one frame; a block (raw or LZ4, either length) over `MAX_BLOCK_LEN` is refused
/// before it is read. LZ4 data is not decoded here.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Frame, WireError> {
    let mut tag = [0u8; 1];
    r.read_exact(&mut tag).await?;
    match tag[0] {
        TAG_BLOCK => {
            let len = read_u32(r).await?;
            limit("block length", len.into(), MAX_BLOCK_LEN)?;
            let mut buf = BytesMut::zeroed(len as usize);
            r.read_exact(&mut buf).await?;
            Ok(Frame::Block(Encoded::Raw(buf.freeze())))
        }
        TAG_LZ4 => {
            let len = read_u32(r).await?;
            limit("LZ4 data length", len.into(), MAX_BLOCK_LEN)?;
            let raw_len = read_u32(r).await?;
            limit("LZ4 block length", raw_len.into(), MAX_BLOCK_LEN)?;
            let mut buf = BytesMut::zeroed(len as usize);
            r.read_exact(&mut buf).await?;
            Ok(Frame::Block(Encoded::Lz4 {
                data: buf.freeze(),
                raw_len,
            }))
        }
        TAG_MISSING => Ok(Frame::Missing(BlockId::from_bytes(read_id(r).await?))),
        TAG_END => Ok(Frame::End),
        other => Err(WireError::Tag(other)),
    }
}

/// Record request: `version u8 | 32-byte build key`.
pub fn encode_records_request(key: &BuildKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(33);
    out.push(WIRE_VERSION);
    out.extend_from_slice(key.as_bytes());
    out
}

/// Reads a record request.
pub async fn read_records_request<R: AsyncRead + Unpin>(r: &mut R) -> Result<BuildKey, WireError> {
    let mut v = [0u8; 1];
    r.read_exact(&mut v).await?;
    if v[0] != WIRE_VERSION {
        return Err(WireError::Version(v[0]));
    }
    Ok(BuildKey::from_bytes(read_id(r).await?))
}

/// Record response: `count u8 | count × (len u32le | len bytes of an encoded record)`.
/// At most [`MAX_RECORDS`] records of at most `MAX_RECORD_LEN` bytes; extra or
/// oversized records are left out.
pub fn encode_records_response(records: &[Vec<u8>]) -> Vec<u8> {
    let fit: Vec<&Vec<u8>> = records
        .iter()
        .filter(|r| !r.is_empty() && r.len() <= MAX_RECORD_LEN)
        .take(MAX_RECORDS)
        .collect();
    let mut out = vec![fit.len() as u8];
    for r in fit {
        out.extend_from_slice(&(r.len() as u32).to_le_bytes());
        out.extend_from_slice(r);
    }
    out
}

/// Reads a record response; the records are not yet verified.
pub async fn read_records_response<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Vec<Vec<u8>>, WireError> {
    let mut count = [0u8; 1];
    r.read_exact(&mut count).await?;
    if count[0] as usize > MAX_RECORDS {
        return Err(WireError::Limit {
            what: "record count",
            value: count[0].into(),
            max: MAX_RECORDS as u64,
        });
    }
    let mut out = Vec::with_capacity(count[0] as usize);
    for _ in 0..count[0] {
        let len = read_u32(r).await?;
        limit("record length", len.into(), MAX_RECORD_LEN)?;
        let mut buf = vec![0u8; len as usize];
        r.read_exact(&mut buf).await?;
        out.push(buf);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures::executor::block_on;

    fn raw(b: &'static [u8]) -> Encoded {
        Encoded::Raw(Bytes::from_static(b))
    }

    fn lz4(b: &'static [u8], raw_len: u32) -> Encoded {
        Encoded::Lz4 {
            data: Bytes::from_static(b),
            raw_len,
        }
    }

    #[test]
    fn frames_round_trip_and_pin_the_layout() {
        let id = BlockId::from_bytes([0xab; 32]);
        let mut buf = Vec::new();
        block_on(async {
            write_frame(&mut buf, &Frame::Block(raw(&[0, 1, 2]))).await?;
            write_frame(&mut buf, &Frame::Missing(id)).await?;
            write_frame(&mut buf, &Frame::Block(lz4(&[9, 8], 300))).await?;
            write_frame(&mut buf, &Frame::End).await
        })
        .unwrap();
        // 00 | 03000000 | 000102, then 01 | ab×32, then 03 | 02000000 | 2c010000 | 0908,
        // then 02.
        assert_eq!(&buf[..8], &[0x00, 3, 0, 0, 0, 0, 1, 2]);
        assert_eq!(buf[8], 0x01);
        assert_eq!(&buf[9..41], &[0xab; 32]);
        assert_eq!(&buf[41..52], &[0x03, 2, 0, 0, 0, 0x2c, 1, 0, 0, 9, 8]);
        assert_eq!(&buf[52..], &[0x02]);
        let mut r = &buf[..];
        let frames: Vec<Frame> = block_on(async {
            let mut v = Vec::new();
            for _ in 0..4 {
                v.push(read_frame(&mut r).await.unwrap());
            }
            v
        });
        assert_eq!(
            frames,
            [
                Frame::Block(raw(&[0, 1, 2])),
                Frame::Missing(id),
                Frame::Block(lz4(&[9, 8], 300)),
                Frame::End
            ]
        );
    }

    #[test]
    fn oversized_or_unknown_frames_are_invalid_and_short_ones_incomplete() {
        let too_long = [0x00, 0x02, 0x40, 0, 0]; // 16,386 bytes
        let err = block_on(read_frame(&mut &too_long[..])).unwrap_err();
        assert!(
            matches!(err, WireError::Limit { value: 16386, .. }),
            "{err}"
        );
        assert!(err.is_violation());
        let empty = [0x00, 0, 0, 0, 0];
        assert!(
            block_on(read_frame(&mut &empty[..]))
                .unwrap_err()
                .is_violation()
        );
        // LZ4 frames: both lengths are bounded before anything is read.
        let lz4_too_long = [0x03, 0x02, 0x40, 0, 0, 1, 0, 0, 0];
        let err = block_on(read_frame(&mut &lz4_too_long[..])).unwrap_err();
        assert!(
            matches!(err, WireError::Limit { value: 16386, .. }),
            "{err}"
        );
        let raw_too_long = [0x03, 1, 0, 0, 0, 0x02, 0x40, 0, 0];
        let err = block_on(read_frame(&mut &raw_too_long[..])).unwrap_err();
        assert!(
            matches!(err, WireError::Limit { value: 16386, .. }),
            "{err}"
        );
        let err = block_on(read_frame(&mut &[0x07][..])).unwrap_err();
        assert!(matches!(err, WireError::Tag(7)));
        let short = [0x00, 3, 0, 0, 0, 1];
        let err = block_on(read_frame(&mut &short[..])).unwrap_err();
        assert!(matches!(&err, WireError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof));
        assert!(!err.is_violation());
    }

    #[test]
    fn requests_round_trip_and_are_bounded() {
        let wants = vec![BlockId::from_bytes([1; 32]), BlockId::from_bytes([2; 32])];
        let enc = encode_block_request(&wants);
        assert_eq!(&enc[..5], &[2, 2, 0, 0, 0]);
        assert_eq!(
            block_on(read_block_request(&mut &enc[..])).unwrap(),
            BlockRequest {
                wants: wants.clone(),
                lz4: true
            }
        );
        let mut v1 = enc.clone();
        v1[0] = 1;
        assert_eq!(
            block_on(read_block_request(&mut &v1[..])).unwrap(),
            BlockRequest {
                wants: wants.clone(),
                lz4: false
            }
        );
        let mut huge = vec![1u8];
        huge.extend_from_slice(&((MAX_WANTS as u32) + 1).to_le_bytes());
        assert!(
            block_on(read_block_request(&mut &huge[..]))
                .unwrap_err()
                .is_violation()
        );
        let mut v3 = enc.clone();
        v3[0] = 3;
        assert!(matches!(
            block_on(read_block_request(&mut &v3[..])),
            Err(WireError::Version(3))
        ));

        let key = BuildKey::from_bytes([9; 32]);
        let enc = encode_records_request(&key);
        assert_eq!(block_on(read_records_request(&mut &enc[..])).unwrap(), key);
        let recs = vec![vec![1, 2, 3], vec![4]];
        let enc = encode_records_response(&recs);
        assert_eq!(enc, [2, 3, 0, 0, 0, 1, 2, 3, 1, 0, 0, 0, 4]);
        assert_eq!(
            block_on(read_records_response(&mut &enc[..])).unwrap(),
            recs
        );
        let too_many = [MAX_RECORDS as u8 + 1];
        assert!(block_on(read_records_response(&mut &too_many[..])).is_err());
    }

    #[test]
    fn provider_keys_are_cids_whose_digest_keeps_the_kinds_apart() {
        let id = [7u8; 32];
        let a = ProviderKey::Artifact(BlockId::from_bytes(id));
        let b = ProviderKey::Build(BuildKey::from_bytes(id));
        assert_eq!(a.tagged()[0], KEY_TAG_ARTIFACT);
        assert_eq!(b.tagged()[0], KEY_TAG_BUILD);
        assert_eq!(a.tagged()[1..], b.tagged()[1..]);
        let (a, b) = (a.to_bytes(), b.to_bytes());
        assert_eq!(a[..4], [0x01, 0x55, 0x1e, 0x20]);
        assert_eq!(a[..4], b[..4]);
        assert_ne!(a[4..], b[4..], "the multihash alone tells the kinds apart");
        // libp2p's own multihash decoder reads what follows the CID header.
        let mh = libp2p::multihash::Multihash::<64>::from_bytes(&a[2..]).unwrap();
        assert_eq!((mh.code(), mh.size()), (MULTIHASH_BLAKE3.into(), 32));
    }
}
