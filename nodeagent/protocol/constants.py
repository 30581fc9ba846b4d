"""Specification constants of the ShadowMesh protocols.

Numbers that define the wire and the cryptography live here; tuning knobs (queue sizes,
batch sizes, socket buffers) live next to the I/O code that uses them.
"""

# --- ML-DSA-87 (FIPS 204) and ML-KEM-1024 (FIPS 203) sizes, in bytes
MLDSA87_PUBLIC_KEY_SIZE = 2592
MLDSA87_SIGNATURE_SIZE = 4627
MLKEM1024_PUBLIC_KEY_SIZE = 1568
MLKEM1024_CIPHERTEXT_SIZE = 1568
X25519_KEY_SIZE = 32

# --- identity
PEER_ID_SIZE = 20  # first 20 bytes of SHA-256(raw ML-DSA-87 public key); 40 hex chars

# --- FIPS 204 context strings: one per purpose, so a signature never verifies elsewhere
CONTEXT_AUTH = b"shadowmesh/auth/v1"
CONTEXT_CERT = b"shadowmesh/cert/v1"
CONTEXT_HANDSHAKE = b"shadowmesh/handshake/v1"
CONTEXT_DHT = b"shadowmesh/dht/v1"

# --- defaults (DESIGN.md part B)
DEFAULT_OVERLAY_CIDR = "10.10.10.0/24"
DEFAULT_CONTROL_PORT = 8443
DEFAULT_UDP_PORT = 9443
PEER_RECORD_TTL_S = 24 * 3600
PEER_RECORD_REFRESH_S = 5 * 60
KEEPALIVE_S = 10
