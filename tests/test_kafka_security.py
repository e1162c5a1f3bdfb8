"""Kafka security: the settings, their validation, the aiokafka and Faust mappings, and real
brokers: TLS and mutual TLS through a TLS proxy in front of the embedded broker, SASL SCRAM
against the embedded broker with ``--authentication``, and mismatched protocols refused.

What ran against a broker and what only as a mapping is tabulated in docs/security.md.
"""

from __future__ import annotations

import ast
import secrets
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from tests.conftest import ARTIFACTS, seconds
from tests.kafka_tls import Pki, TlsProxy, make_pki
from workers.broker import EmbeddedBroker, free_port
from workers.errors import BrokerUnavailable
from workers.kafka import (
    KafkaAuthFailed,
    ensure_topics,
    new_consumer,
    new_producer,
    start_producer,
)
from workers.kafka_security import (
    PLAINTEXT,
    CommandTokenProvider,
    FileTokenProvider,
    KafkaSecurity,
    KafkaSecurityError,
    aiokafka_kwargs,
    faust_credentials,
)
from workers.settings import KafkaSettings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for var in [v for v in os.environ if v.startswith("CALLSCRIBE_KAFKA_")]:
        monkeypatch.delenv(var)
    return monkeypatch


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


# ------------------------------------------------------------------------------ mapping


def _faust_view(s: KafkaSecurity) -> dict[str, Any]:
    """What Faust hands its aiokafka clients for ``s``: its own mapping of our credentials."""
    return dict(credentials_to_aiokafka_auth(faust_credentials(s)))


def test_plaintext_is_the_default(clean_env: pytest.MonkeyPatch) -> None:
    security = KafkaSettings().kafka_security()
    assert security == PLAINTEXT
    assert aiokafka_kwargs(security) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(security) is None
    assert _faust_view(security) == {"security_protocol": "PLAINTEXT"}


def test_ssl_maps_to_a_verifying_context_in_aiokafka_and_faust(pki: Pki) -> None:
    security = KafkaSecurity(protocol="SSL", ca_file=str(pki.ca))
    kwargs = aiokafka_kwargs(security)
    assert kwargs["security_protocol"] == "SSL" and "sasl_mechanism" not in kwargs
    context = kwargs["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    faust_side = _faust_view(security)
    assert faust_side["security_protocol"] == "SSL"
    assert faust_side["ssl_context"].verify_mode == ssl.CERT_REQUIRED


def test_mtls_loads_the_client_certificate(pki: Pki) -> None:
    security = KafkaSecurity(protocol="SSL", ca_file=str(pki.ca), cert_file=str(pki.client_cert),
                             key_file=str(pki.client_key))
    assert aiokafka_kwargs(security)["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(KafkaSecurityError, match="do not load"):  # key of another certificate
        aiokafka_kwargs(KafkaSecurity(protocol="SSL", cert_file=str(pki.client_cert),
                                      key_file=str(pki.server_key)))


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_password_mechanisms_map_alike_in_aiokafka_and_faust(
        protocol: str, mechanism: str, pki: Pki) -> None:
    ca = str(pki.ca) if protocol == "SASL_SSL" else None
    # protocol and mechanism are parametrized strs; KafkaSecurity takes the Literals.
    security = KafkaSecurity(protocol=protocol, mechanism=mechanism,  # type: ignore[arg-type]  # see above
                             username="callscribe-ingest", password="pw", ca_file=ca)
    kwargs = aiokafka_kwargs(security)
    faust_side = _faust_view(security)
    for side in (kwargs, faust_side):
        assert side["security_protocol"] == protocol
        assert side["sasl_mechanism"] == mechanism
        assert side["sasl_plain_username"] == "callscribe-ingest"
        assert side["sasl_plain_password"] == "pw"
        assert (side.get("ssl_context") is not None) == (protocol == "SASL_SSL")
    assert "pw" not in repr(security)


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_oauthbearer_maps_a_token_provider(protocol: str, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("tok-1\n")
    # protocol is a parametrized str; KafkaSecurity takes the Literal.
    security = KafkaSecurity(protocol=protocol, mechanism="OAUTHBEARER",  # type: ignore[arg-type]  # see above
                             oauth_token_file=str(token))
    kwargs = aiokafka_kwargs(security)
    assert kwargs["sasl_mechanism"] == "OAUTHBEARER"
    assert isinstance(kwargs["sasl_oauth_token_provider"], FileTokenProvider)
    faust_side = _faust_view(security)
    assert faust_side["security_protocol"] == protocol
    assert faust_side["sasl_mechanism"] == "OAUTHBEARER"
    assert isinstance(faust_side["sasl_oauth_token_provider"], FileTokenProvider)


async def test_token_file_is_reread_at_each_login(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    provider = FileTokenProvider(str(token))
    assert await provider.token() == "first"
    token.write_text("second")
    assert await provider.token() == "second"


async def test_token_command_prints_the_token_or_fails_clearly() -> None:
    assert await CommandTokenProvider("echo tok-from-command").token() == "tok-from-command"
    with pytest.raises(KafkaSecurityError, match="exited 3 without a token: nope"):
        await CommandTokenProvider("echo nope >&2; exit 3").token()


BAD = [
    ({"protocol": "SASL_SSL"}, "needs CALLSCRIBE_KAFKA_SASL_MECHANISM"),
    ({"protocol": "SSL", "mechanism": "PLAIN", "username": "u", "password": "p"},
     "does not authenticate with SASL"),
    ({"protocol": "PLAINTEXT", "username": "u"}, "does not authenticate with SASL"),
    ({"protocol": "SASL_PLAINTEXT", "mechanism": "SCRAM-SHA-512", "username": "u",
      "password": "p", "ca_file": "/ca.pem"}, "does not use TLS"),
    ({"protocol": "SSL", "cert_file": "/c.pem"}, "needs both"),
    ({"protocol": "SASL_SSL", "mechanism": "SCRAM-SHA-256", "username": "u"},
     "needs a username and a password"),
    ({"protocol": "SASL_SSL", "mechanism": "OAUTHBEARER"}, "exactly one of"),
    ({"protocol": "SASL_SSL", "mechanism": "OAUTHBEARER", "oauth_token_file": "/t",
      "oauth_token_command": "x"}, "exactly one of"),
    ({"protocol": "SASL_SSL", "mechanism": "OAUTHBEARER", "oauth_token_file": "/t",
      "username": "u"}, "token only"),
    ({"protocol": "SASL_SSL", "mechanism": "PLAIN", "username": "u", "password": "p",
      "oauth_token_file": "/t"}, "OAUTHBEARER"),
    ({"protocol": "TLS"}, "expected one of"),
    ({"protocol": "SASL_SSL", "mechanism": "GSSAPI"}, "expected one of"),
]


@pytest.mark.parametrize(("fields", "message"), BAD)
def test_inconsistent_combinations_are_refused_with_the_setting_to_change(
        fields: dict[str, str], message: str) -> None:
    with pytest.raises(KafkaSecurityError, match=message):
        KafkaSecurity(**fields)  # type: ignore[arg-type]  # wrong on purpose: refused


def test_settings_refuse_bad_combinations_when_they_load(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CALLSCRIBE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    clean_env.setenv("CALLSCRIBE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    with pytest.raises(ValueError, match="needs a username and a password"):
        KafkaSettings()
    clean_env.setenv("CALLSCRIBE_KAFKA_SASL_USERNAME", "u")
    clean_env.setenv("CALLSCRIBE_KAFKA_SASL_PASSWORD", "p")
    clean_env.setenv("CALLSCRIBE_KAFKA_SASL_PASSWORD_FILE", "/p")
    with pytest.raises(ValueError, match="PASSWORD or CALLSCRIBE_KAFKA_SASL_PASSWORD_FILE"):
        KafkaSettings()
    clean_env.setenv("CALLSCRIBE_KAFKA_SECURITY_PROTOCOL", "SSL")
    with pytest.raises(ValueError):
        KafkaSettings()


def test_credentials_from_mounted_secret_files(clean_env: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    (tmp_path / "user").write_text("callscribe-bridge\n")
    (tmp_path / "password").write_text("s3cret\n")  # Kubernetes Secrets keep no newline; editors do
    clean_env.setenv("CALLSCRIBE_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    clean_env.setenv("CALLSCRIBE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    clean_env.setenv("CALLSCRIBE_KAFKA_SASL_USERNAME_FILE", str(tmp_path / "user"))
    clean_env.setenv("CALLSCRIBE_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "password"))
    clean_env.setenv("CALLSCRIBE_KAFKA_SSL_CA_FILE", "")  # blank ConfigMap key: unset
    settings = KafkaSettings()
    assert "s3cret" not in repr(settings)
    security = settings.kafka_security()
    assert (security.username, security.password) == ("callscribe-bridge", "s3cret")
    clean_env.setenv("CALLSCRIBE_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(KafkaSecurityError, match=r"PASSWORD_FILE=.*missing: cannot read it"):
        KafkaSettings().kafka_security()


def test_password_from_env_is_a_secret(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CALLSCRIBE_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    clean_env.setenv("CALLSCRIBE_KAFKA_SASL_MECHANISM", "PLAIN")
    clean_env.setenv("CALLSCRIBE_KAFKA_SASL_USERNAME", "u")
    clean_env.setenv("CALLSCRIBE_KAFKA_SASL_PASSWORD", "hunter2")
    settings = KafkaSettings()
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings)
    assert settings.kafka_security().password == "hunter2"


def test_missing_ca_file_is_named() -> None:
    with pytest.raises(KafkaSecurityError, match=r"SSL_CA_FILE=/nope\.pem: no such"):
        aiokafka_kwargs(KafkaSecurity(protocol="SSL", ca_file="/nope.pem"))


def test_faust_workers_get_the_credentials(clean_env: pytest.MonkeyPatch, pki: Pki) -> None:
    """The transcriber's and the assist worker's Faust apps carry the settings' credentials
    (Faust passes broker_credentials to its consumer, producer and topic admin alike)."""
    from workers.assist.app import build_engine
    from workers.assist.app import create_app as assist_app
    from workers.settings import AssistSettings, TranscribeSettings
    from workers.transcribe.app import create_app as transcribe_app

    clean_env.setenv("CALLSCRIBE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    clean_env.setenv("CALLSCRIBE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    clean_env.setenv("CALLSCRIBE_KAFKA_SASL_USERNAME", "callscribe-assist")
    clean_env.setenv("CALLSCRIBE_KAFKA_SASL_PASSWORD", "pw")
    clean_env.setenv("CALLSCRIBE_KAFKA_SSL_CA_FILE", str(pki.ca))
    settings = AssistSettings()
    no_model: Any = SimpleNamespace(decode=None, lanes=1)  # the app is built, never run
    for app in (assist_app(settings, build_engine(settings)),
                transcribe_app(TranscribeSettings(), no_model)):
        auth = credentials_to_aiokafka_auth(app.conf.broker_credentials)
        assert auth["security_protocol"] == "SASL_SSL"
        assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
        assert auth["sasl_plain_username"] == "callscribe-assist"
    assert TranscribeSettings().kafka_security() == settings.kafka_security().__class__(
        **{**settings.kafka_security().__dict__})


def test_no_module_builds_a_kafka_client_around_the_helpers() -> None:
    """Every aiokafka client is built in workers/kafka.py, which applies the security settings;
    a module that called AIOKafkaConsumer(...) itself could connect in plaintext."""
    clients = {"AIOKafkaConsumer", "AIOKafkaProducer", "AIOKafkaAdminClient"}
    offenders = []
    for path in (ROOT / "workers").rglob("*.py"):
        if path == ROOT / "workers" / "kafka.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", None))
                if name in clients:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert not offenders, offenders


# ------------------------------------------------------------------------ real brokers


@pytest.fixture(scope="module")
def tls_broker() -> Iterator[tuple[EmbeddedBroker, int]]:
    """An embedded broker advertising the port a TLS proxy will serve."""
    proxy_port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    with EmbeddedBroker(advertised_port=proxy_port,
                        log_path=ARTIFACTS / "broker-tls.log") as embedded:
        yield embedded, proxy_port


@pytest.fixture
async def tls_proxy(tls_broker: tuple[EmbeddedBroker, int], pki: Pki,
                    request: pytest.FixtureRequest) -> AsyncIterator[TlsProxy]:
    broker, port = tls_broker
    proxy = await TlsProxy(pki, port=port, upstream_port=broker.port,
                           require_client_cert=getattr(request, "param", False)).start()
    yield proxy
    await proxy.stop()


async def _round_trip(bootstrap: str, security: KafkaSecurity) -> bytes:
    """Create a topic, produce a record, consume it back: admin, producer, consumer."""
    topic = f"sec-{secrets.token_hex(4)}"
    await ensure_topics(bootstrap, [topic], partitions=1, security=security,
                        wait_s=seconds(10))
    producer = new_producer(bootstrap, client_id="test-sec", security=security)
    await start_producer(producer, security=security, wait_s=seconds(10))
    try:
        await producer.send_and_wait(topic, b"over tls", key=b"call-1")
    finally:
        await producer.stop()
    consumer = new_consumer(bootstrap, topic, security=security, group_id=None,
                            auto_offset_reset="earliest", fetch_max_wait_ms=20)
    await consumer.start()
    try:
        record = await consumer.getone()
    finally:
        await consumer.stop()
    assert isinstance(record.value, bytes)
    return record.value


async def test_ssl_round_trip_through_a_tls_listener(tls_proxy: TlsProxy, pki: Pki) -> None:
    bootstrap = f"127.0.0.1:{tls_proxy.port}"
    assert await _round_trip(bootstrap, KafkaSecurity(protocol="SSL", ca_file=str(pki.ca))) \
        == b"over tls"


async def test_ssl_refuses_a_broker_its_ca_did_not_sign(tls_proxy: TlsProxy, pki: Pki) -> None:
    bootstrap = f"127.0.0.1:{tls_proxy.port}"
    with pytest.raises(BrokerUnavailable, match="SECURITY_PROTOCOL is SSL"):
        await ensure_topics(bootstrap, ["never"], partitions=1, wait_s=seconds(2),
                            security=KafkaSecurity(protocol="SSL", ca_file=str(pki.other_ca)))


@pytest.mark.parametrize("tls_proxy", [True], indirect=True)
async def test_mutual_tls_round_trip_and_refusal_without_a_certificate(
        tls_proxy: TlsProxy, pki: Pki) -> None:
    bootstrap = f"127.0.0.1:{tls_proxy.port}"
    mtls = KafkaSecurity(protocol="SSL", ca_file=str(pki.ca), cert_file=str(pki.client_cert),
                         key_file=str(pki.client_key))
    assert await _round_trip(bootstrap, mtls) == b"over tls"
    with pytest.raises(BrokerUnavailable):
        await ensure_topics(bootstrap, ["never"], partitions=1, wait_s=seconds(2),
                            security=KafkaSecurity(protocol="SSL", ca_file=str(pki.ca)))


async def test_plaintext_client_cannot_use_a_tls_listener(tls_proxy: TlsProxy) -> None:
    with pytest.raises(BrokerUnavailable, match="SECURITY_PROTOCOL is PLAINTEXT"):
        await ensure_topics(f"127.0.0.1:{tls_proxy.port}", ["never"], partitions=1,
                            wait_s=seconds(2))


async def test_ssl_client_against_a_plaintext_broker_fails_clearly(
        broker: EmbeddedBroker, pki: Pki) -> None:
    with pytest.raises(BrokerUnavailable, match="SECURITY_PROTOCOL is SSL"):
        await ensure_topics(broker.bootstrap, ["never"], partitions=1, wait_s=seconds(2),
                            security=KafkaSecurity(protocol="SSL", ca_file=str(pki.ca)))


@pytest.fixture(scope="module")
def auth_broker() -> Iterator[EmbeddedBroker]:
    ARTIFACTS.mkdir(exist_ok=True)
    with EmbeddedBroker(authentication=True,
                        log_path=ARTIFACTS / "broker-auth.log") as embedded:
        yield embedded


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_scram_reaches_the_brokers_sasl_layer_and_a_refusal_is_fatal(
        auth_broker: EmbeddedBroker, mechanism: str) -> None:
    """The embedded broker with --authentication negotiates SCRAM with our client and refuses
    a user it does not know; callscribe stops at once with the setting to check (no retry
    loop). A successful login needs users, which Tansu 0.6's memory storage cannot hold
    before --authentication is on: see docs/security.md."""
    # mechanism is a parametrized str; KafkaSecurity takes the Literal.
    security = KafkaSecurity(protocol="SASL_PLAINTEXT", mechanism=mechanism,  # type: ignore[arg-type]  # see above
                             username="nobody", password="wrong")
    with pytest.raises(KafkaAuthFailed, match=f"refused SASL {mechanism} as 'nobody'"):
        await ensure_topics(auth_broker.bootstrap, ["never"], partitions=1,
                            wait_s=seconds(10), security=security)
    producer = new_producer(auth_broker.bootstrap, client_id="test-sec", security=security)
    with pytest.raises(KafkaAuthFailed):
        await start_producer(producer, security=security, wait_s=seconds(10))
    await producer.stop()


async def test_a_broker_requiring_sasl_refuses_plaintext_and_plain(
        auth_broker: EmbeddedBroker) -> None:
    with pytest.raises(BrokerUnavailable, match="SECURITY_PROTOCOL is PLAINTEXT"):
        await ensure_topics(auth_broker.bootstrap, ["never"], partitions=1, wait_s=seconds(2))
    plain = KafkaSecurity(protocol="SASL_PLAINTEXT", mechanism="PLAIN", username="u",
                          password="p")  # Tansu offers SCRAM only: it closes the connection
    with pytest.raises(BrokerUnavailable):
        await ensure_topics(auth_broker.bootstrap, ["never"], partitions=1, wait_s=seconds(2),
                            security=plain)
