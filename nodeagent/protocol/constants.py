"""Specification constants of the ShadowMesh protocols.

Numbers that define the wire and the cryptography live here; tuning knobs (queue sizes,
batch sizes, socket buffers) live next to the I/O code that uses them.
"""

from enum import IntEnum

# --- ML-DSA-87 (FIPS 204) and ML-KEM-1024 (FIPS 203) sizes, in bytes
MLDSA87_PUBLIC_KEY_SIZE = 2592
MLDSA87_SIGNATURE_SIZE = 4627
MLKEM1024_PUBLIC_KEY_SIZE = 1568
MLKEM1024_CIPHERTEXT_SIZE = 1568
X25519_KEY_SIZE = 32

# --- identity
PEER_ID_SIZE = 20  # first 20 bytes of SHA-256(raw ML-DSA-87 public key); 40 hex chars

# --- FIPS 204 context strings: one per purpose, so a signature never verifies elsewhere
CONTEXT_AUTH = b"shadowmesh/auth/v1"  # HTTP: /api/auth/verify, over the challenge bytes as decoded
CONTEXT_AGENT_AUTH = b"shadowmesh/agent-auth/v1"  # websocket login: purpose, CA fingerprint, nonce
CONTEXT_CERT = b"shadowmesh/cert/v1"
CONTEXT_NETMAP = b"shadowmesh/netmap/v1"  # the CA over every netmap and delta it sends
CONTEXT_HANDSHAKE = b"shadowmesh/handshake/v2"  # v2: signed HELLO (docs/protocol.md#versioning)
CONTEXT_DHT = b"shadowmesh/dht/v1"
CA_FINGERPRINT_SIZE = 32  # SHA-256 of the CA's raw ML-DSA-87 public key (enroll tokens, agent login)

# --- defaults (docs/operations.md#ports, docs/protocol.md#key-lifetimes-and-timers)
DEFAULT_OVERLAY_CIDR = "10.10.10.0/24"
DEFAULT_CONTROL_PORT = 8443
DEFAULT_UDP_PORT = 9443
PEER_RECORD_TTL_S = 24 * 3600
PEER_RECORD_REFRESH_S = 5 * 60
KEEPALIVE_S = 10

# --- specification: key lifetimes and timers, WireGuard's numbers (wireguard-go device/constants.go,
#     whitepaper §6). Tests lower them through keys.Limits; the wire never carries them.
REKEY_AFTER_MESSAGES = 1 << 60  # a sender starts a new handshake
REJECT_AFTER_MESSAGES = (1 << 64) - (1 << 13) - 1  # counters >= this are never sent nor accepted
REKEY_AFTER_TIME_S = 120  # the initiator of a keypair rekeys when it sends on an older one
REJECT_AFTER_TIME_S = 180  # a keypair this old is unusable (we also erase it then)
REKEY_ATTEMPT_TIME_S = 90  # give up retrying a handshake after this long
REKEY_TIMEOUT_S = 5  # retry a handshake that got no answer; also the stalled-handshake cut-off
REKEY_TIMEOUT_JITTER_MAX_S = 0.334  # random extra delay per retry (the caller draws it)
KEEPALIVE_TIMEOUT_S = KEEPALIVE_S  # passive keepalive after receiving with nothing to send
# the initiator rekeys on the receive path before the responder's sends hit REJECT_AFTER_TIME
REKEY_AFTER_TIME_RECEIVING_S = REJECT_AFTER_TIME_S - KEEPALIVE_TIMEOUT_S - REKEY_TIMEOUT_S  # 165
ZERO_AFTER_TIME_S = REJECT_AFTER_TIME_S * 3  # 540: erase all key material of an idle session
HANDSHAKE_MIN_INTERVAL_S = 0.020  # a responder ignores a peer's HELLOs closer together than this
REPLAY_WINDOW = 8128  # counters remembered behind the highest accepted (RFC 6479 ring 128 x 64)

# --- specification: protocol version, handshake and control channel
# the `v` of every agent websocket message; 2: netmaps signed by the CA, the login bound to the CA
# (CONTEXT_AGENT_AUTH), certificate renewal; 3: the netmap carries the access policy, a peer's
# counters carry denied_frames. An agent of an older version is closed with UNSUPPORTED_VERSION.
PROTOCOL_VERSION = 3
HANDSHAKE_VERSION = 2  # the HELLO's version byte; 2: the HELLO is signed and names its responder
SUITE_HYBRID_V1 = 1  # X25519 + ML-KEM-1024, ML-DSA-87 signatures, HKDF-SHA256, ChaCha20-Poly1305
MAX_CONTROL_MESSAGE = 64 * 1024  # control-channel frame cap (body bytes), checked before reading


# --- specification: the agent websocket (/ws/agent/)
class CloseCode(IntEnum):
    """Websocket close codes of the agent link (4000-4999 are free for applications)."""

    NORMAL = 1000
    TOO_LARGE = 1009
    MALFORMED = 4400
    AUTH_FAILED = 4401
    BAD_SIGNATURE = 4402  # sent by an agent: a netmap or delta its network's CA did not sign
    REVOKED = 4403
    UNKNOWN_TYPE = 4404
    AUTH_TIMEOUT = 4408
    RATE_LIMITED = 4429
    UNSUPPORTED_VERSION = 4426
