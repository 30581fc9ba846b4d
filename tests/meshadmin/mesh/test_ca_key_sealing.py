"""The network CA key: sealed at rest, never shown, usable after a SECRET_KEY rotation."""

import base64

import pytest

from meshadmin.mesh.models import Network
from meshadmin.mesh.pki import CAKeyError, load_ca_key, seal_seed, unseal_seed

pytestmark = pytest.mark.django_db


def test_sealing_the_same_seed_twice_gives_different_ciphertexts(network):
    seed = b"s" * 32
    public = bytes(network.ca_public_key)
    first, second = seal_seed(seed, public), seal_seed(seed, public)
    assert first != second
    assert unseal_seed(first, public) == unseal_seed(second, public) == seed


def test_a_tampered_sealed_key_fails_to_open(network):
    sealed = bytearray(network.ca_private_sealed)
    sealed[-1] ^= 1
    with pytest.raises(CAKeyError):
        unseal_seed(bytes(sealed), network.ca_public_key)


def test_a_sealed_key_is_bound_to_its_network(network):
    from meshadmin.mesh.services.networks import create_network

    other = create_network("other")
    with pytest.raises(CAKeyError):
        unseal_seed(network.ca_private_sealed, other.ca_public_key)


def test_the_ca_key_opens_after_rotation_with_the_old_key_as_fallback(network, settings):
    old = settings.SECRET_KEY
    settings.SECRET_KEY = "n" * 60
    with pytest.raises(CAKeyError):
        load_ca_key(network)
    settings.SECRET_KEY_FALLBACKS = [old]
    key = load_ca_key(network)
    assert key.public_key().public_bytes_raw() == bytes(network.ca_public_key)


def test_the_ca_seed_appears_in_no_api_response(api, make_token, identity_factory, network):
    seed = load_ca_key(network).private_bytes_raw()
    response = api.enroll(make_token(), identity_factory(), "belgium")
    body = response.content
    assert seed not in body and base64.b64encode(seed) not in body
    assert bytes(Network.objects.get().ca_private_sealed) not in body
