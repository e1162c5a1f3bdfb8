"""How every callscribe Kafka client authenticates and encrypts: one description, two mappings.

:class:`KafkaSecurity` is what ``CALLSCRIBE_KAFKA_SECURITY_PROTOCOL``, ``..._SASL_MECHANISM`` and
the credential settings describe (``workers.settings.KafkaSettings.kafka_security`` builds it,
reading mounted secret files once, at start). :func:`aiokafka_kwargs` turns it into the keyword
arguments of ``AIOKafkaProducer``/``AIOKafkaConsumer``/``AIOKafkaAdminClient`` and
:func:`faust_credentials` into Faust's ``broker_credentials``; ``workers.kafka`` builds every
client through them, so no client can be left plaintext by accident.

Combinations (:func:`check`, run when the settings load):

=================  ==========================================================
PLAINTEXT          no TLS files, no SASL mechanism
SSL                TLS (CA file optional: the system CAs), client cert+key = mTLS
SASL_PLAINTEXT     a mechanism; PLAIN/SCRAM need username and password
SASL_SSL           both of the above
OAUTHBEARER        exactly one of a token file (re-read on every login) or a token command
=================  ==========================================================
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aiokafka.abc import AbstractTokenProvider

from workers.errors import CallscribeError

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
PROTOCOLS: tuple[Protocol, ...] = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS: tuple[Mechanism, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
#: How long a token command may run before the login fails.
TOKEN_COMMAND_TIMEOUT_S = 30.0


class KafkaSecurityError(CallscribeError):
    """The Kafka security settings do not fit together, or a file they name cannot be read."""


@dataclass(frozen=True)
class KafkaSecurity:
    """The security part of every Kafka client's configuration. Default: PLAINTEXT."""

    protocol: Protocol = "PLAINTEXT"
    mechanism: Mechanism | None = None
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    oauth_token_file: str | None = None
    oauth_token_command: str | None = None

    def __post_init__(self) -> None:
        check(self)

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def __repr__(self) -> str:  # never print the password
        return (f"KafkaSecurity(protocol={self.protocol!r}, mechanism={self.mechanism!r}, "
                f"username={self.username!r}, mtls={self.cert_file is not None})")


def check(s: KafkaSecurity) -> None:
    """Raise :class:`KafkaSecurityError` naming the setting to change when ``s`` is
    inconsistent (a mechanism without SASL, TLS files without TLS, half a key pair, ...)."""
    if s.protocol not in PROTOCOLS:
        raise KafkaSecurityError(f"CALLSCRIBE_KAFKA_SECURITY_PROTOCOL={s.protocol!r}; expected "
                                 f"one of {', '.join(PROTOCOLS)}")
    if s.mechanism is not None and s.mechanism not in MECHANISMS:
        raise KafkaSecurityError(f"CALLSCRIBE_KAFKA_SASL_MECHANISM={s.mechanism!r}; expected "
                                 f"one of {', '.join(MECHANISMS)}")
    if s.sasl and s.mechanism is None:
        raise KafkaSecurityError(f"CALLSCRIBE_KAFKA_SECURITY_PROTOCOL={s.protocol} needs "
                                 f"CALLSCRIBE_KAFKA_SASL_MECHANISM ({', '.join(MECHANISMS)})")
    if not s.sasl:
        given = [n for n, v in (("CALLSCRIBE_KAFKA_SASL_MECHANISM", s.mechanism),
                                ("CALLSCRIBE_KAFKA_SASL_USERNAME", s.username),
                                ("CALLSCRIBE_KAFKA_SASL_PASSWORD", s.password),
                                ("CALLSCRIBE_KAFKA_OAUTH_TOKEN_FILE", s.oauth_token_file),
                                ("CALLSCRIBE_KAFKA_OAUTH_TOKEN_COMMAND", s.oauth_token_command))
                 if v]
        if given:
            raise KafkaSecurityError(
                f"{', '.join(given)} set but CALLSCRIBE_KAFKA_SECURITY_PROTOCOL={s.protocol} "
                "does not authenticate with SASL: use SASL_SSL (or SASL_PLAINTEXT)")
    if not s.tls:
        given = [n for n, v in (("CALLSCRIBE_KAFKA_SSL_CA_FILE", s.ca_file),
                                ("CALLSCRIBE_KAFKA_SSL_CERT_FILE", s.cert_file),
                                ("CALLSCRIBE_KAFKA_SSL_KEY_FILE", s.key_file)) if v]
        if given:
            raise KafkaSecurityError(
                f"{', '.join(given)} set but CALLSCRIBE_KAFKA_SECURITY_PROTOCOL={s.protocol} "
                "does not use TLS: use SSL or SASL_SSL")
    if bool(s.cert_file) != bool(s.key_file):
        raise KafkaSecurityError("mTLS needs both CALLSCRIBE_KAFKA_SSL_CERT_FILE and "
                                 "CALLSCRIBE_KAFKA_SSL_KEY_FILE")
    if s.mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        if not s.username or not s.password:
            raise KafkaSecurityError(
                f"SASL {s.mechanism} needs a username and a password: set "
                "CALLSCRIBE_KAFKA_SASL_USERNAME (or _USERNAME_FILE) and "
                "CALLSCRIBE_KAFKA_SASL_PASSWORD (or _PASSWORD_FILE)")
        if s.oauth_token_file or s.oauth_token_command:
            raise KafkaSecurityError(f"OAuth token settings set with SASL {s.mechanism}; they "
                                     "are for CALLSCRIBE_KAFKA_SASL_MECHANISM=OAUTHBEARER")
    if s.mechanism == "OAUTHBEARER":
        if bool(s.oauth_token_file) == bool(s.oauth_token_command):
            raise KafkaSecurityError(
                "SASL OAUTHBEARER needs exactly one of CALLSCRIBE_KAFKA_OAUTH_TOKEN_FILE "
                "(re-read at every login) and CALLSCRIBE_KAFKA_OAUTH_TOKEN_COMMAND (prints a "
                "token)")
        if s.username or s.password:
            raise KafkaSecurityError("a SASL username/password set with OAUTHBEARER, which "
                                     "authenticates with a token only")


PLAINTEXT = KafkaSecurity()


def read_secret_file(path: str, setting: str) -> str:
    """The content of a mounted secret, without the trailing newline editors add."""
    try:
        return Path(path).read_text().rstrip("\r\n")
    except OSError as exc:
        raise KafkaSecurityError(f"{setting}={path}: cannot read it ({exc.strerror})") from None


def ssl_context(s: KafkaSecurity) -> ssl.SSLContext:
    """A client TLS context that verifies the brokers' certificates and host names against
    the CA file (or the system CAs) and presents the client certificate for mTLS."""
    from aiokafka.helpers import create_ssl_context

    for setting, path in (("CALLSCRIBE_KAFKA_SSL_CA_FILE", s.ca_file),
                          ("CALLSCRIBE_KAFKA_SSL_CERT_FILE", s.cert_file),
                          ("CALLSCRIBE_KAFKA_SSL_KEY_FILE", s.key_file)):
        if path and not Path(path).is_file():
            raise KafkaSecurityError(f"{setting}={path}: no such file")
    try:
        context: ssl.SSLContext = create_ssl_context(cafile=s.ca_file, certfile=s.cert_file,
                                                     keyfile=s.key_file)
    except ssl.SSLError as exc:
        raise KafkaSecurityError(f"the Kafka TLS files do not load: {exc}") from None
    return context


class FileTokenProvider(AbstractTokenProvider):  # type: ignore[misc]  # aiokafka is untyped
    """OAUTHBEARER token read from a file at each login (a sidecar or a projected volume
    refreshes it: e.g. an MSK IAM signer or a workload-identity token)."""

    def __init__(self, path: str) -> None:
        self.path = path

    async def token(self) -> str:
        return read_secret_file(self.path, "CALLSCRIBE_KAFKA_OAUTH_TOKEN_FILE").strip()


class CommandTokenProvider(AbstractTokenProvider):  # type: ignore[misc]  # aiokafka is untyped
    """OAUTHBEARER token printed by a command (run with ``sh -c``) at each login."""

    def __init__(self, command: str) -> None:
        self.command = command

    async def token(self) -> str:
        process = await asyncio.create_subprocess_shell(
            self.command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(process.communicate(), TOKEN_COMMAND_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise KafkaSecurityError("CALLSCRIBE_KAFKA_OAUTH_TOKEN_COMMAND did not print a "
                                     f"token within {TOKEN_COMMAND_TIMEOUT_S:.0f}s") from None
        token = out.decode().strip()
        if process.returncode != 0 or not token:
            raise KafkaSecurityError(
                f"CALLSCRIBE_KAFKA_OAUTH_TOKEN_COMMAND exited {process.returncode} without a "
                f"token: {err.decode(errors='replace').strip()[:200]}")
        return token


def token_provider(s: KafkaSecurity) -> AbstractTokenProvider:
    if s.oauth_token_file:
        return FileTokenProvider(s.oauth_token_file)
    assert s.oauth_token_command, "check() requires a token file or command"
    return CommandTokenProvider(s.oauth_token_command)


def aiokafka_kwargs(s: KafkaSecurity) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (producer, consumer, admin)."""
    kwargs: dict[str, Any] = {"security_protocol": s.protocol}
    if s.tls:
        kwargs["ssl_context"] = ssl_context(s)
    if s.sasl:
        kwargs["sasl_mechanism"] = s.mechanism
        if s.mechanism == "OAUTHBEARER":
            kwargs["sasl_oauth_token_provider"] = token_provider(s)
        else:
            kwargs["sasl_plain_username"] = s.username
            kwargs["sasl_plain_password"] = s.password
    return kwargs


def faust_credentials(s: KafkaSecurity) -> Any:
    """Faust's ``broker_credentials`` for ``s`` (``None`` for PLAINTEXT); Faust hands them to
    the aiokafka clients of its consumer, producer and topic creation alike."""
    import faust
    from faust.auth import OAuthCredentials

    if not s.tls and not s.sasl:
        return None
    context = ssl_context(s) if s.tls else None
    if not s.sasl:
        return faust.SSLCredentials(context)
    if s.mechanism == "OAUTHBEARER":
        return OAuthCredentials(oauth_cb=token_provider(s), ssl_context=context)
    return faust.SASLCredentials(username=s.username, password=s.password,
                                 ssl_context=context, mechanism=s.mechanism)
