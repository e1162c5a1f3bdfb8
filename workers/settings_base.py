"""The settings every worker shares (Kafka and topics), and the rules every settings class
follows: how a field's environment variable is named (:func:`env_name`) and how a renamed
setting keeps its old variable for one release (``renamed``; see
:meth:`KafkaSettings._read_old_names`). The workers' own classes are in
:mod:`workers.settings`, which re-exports these names.
"""

from __future__ import annotations

import logging
import os
from typing import Any, ClassVar

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.kafka_security import KafkaSecurity, KafkaSecurityError, Mechanism, Protocol

log = logging.getLogger(__name__)
_warned: set[str] = set()  # old variable names already warned about in this process


def env_name(cls: type[BaseSettings], field: str) -> str:
    """The variable ``field`` of ``cls`` is read from: its ``validation_alias`` (the first of
    several), else ``env_prefix`` + the field name, upper case."""
    alias = cls.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        alias = next((c for c in alias.choices if isinstance(c, str)), None)
    if isinstance(alias, str):
        return alias.upper()
    return f"{cls.model_config.get('env_prefix', '')}{field}".upper()


class KafkaSettings(BaseSettings):
    """How every worker reaches Kafka and names its topics."""

    # hide_input_in_errors: a refused setting's error must not print its value (a password).
    model_config = SettingsConfigDict(env_prefix="CALLSCRIBE_", extra="ignore",
                                      hide_input_in_errors=True)
    #: Renamed settings: field → the variable it was read from before. The old variable is
    #: still read, when the new one is unset, until the next release (a deprecation warning
    #: is logged once); docs/settings.md names it beside the new one.
    renamed: ClassVar[dict[str, str]] = {}

    kafka_bootstrap: str | None = Field(
        default=None,
        description="Kafka bootstrap servers (host:port,...). Unset: the embedded Tansu broker "
        "on 127.0.0.1:CALLSCRIBE_BROKER_PORT.",
    )
    broker_port: int = Field(default=9092, description="Port of the embedded broker.")
    topic_prefix: str = Field(default="callscribe", description="Prefix of every topic name.")
    topic_partitions: int = Field(
        default=8, ge=1, description="Partitions of each topic when callscribe creates it."
    )
    topic_replication: int = Field(
        default=1, ge=1, description="Replication factor of topics callscribe creates."
    )
    fetch_max_wait_ms: int = Field(
        default=20,
        ge=1,
        description="Longest a consumer fetch waits for data; low keeps hop latency low.",
    )

    # --- Kafka security (docs/security.md, "Kafka") ---
    kafka_security_protocol: Protocol = Field(
        default="PLAINTEXT",
        description="How clients reach Kafka: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL "
        "(TLS + SASL). Used by every client: workers, CLI, topic creation.",
    )
    kafka_sasl_mechanism: Mechanism | None = Field(
        default=None,
        description="SASL mechanism with SASL_*: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or "
        "OAUTHBEARER (token from CALLSCRIBE_KAFKA_OAUTH_TOKEN_FILE or _COMMAND).",
    )
    kafka_sasl_username: str | None = Field(
        default=None, description="SASL username (PLAIN, SCRAM).")
    kafka_sasl_username_file: str | None = Field(
        default=None, description="File holding the SASL username (a mounted secret); "
        "instead of CALLSCRIBE_KAFKA_SASL_USERNAME.")
    kafka_sasl_password: SecretStr | None = Field(
        default=None, description="SASL password (PLAIN, SCRAM).")
    kafka_sasl_password_file: str | None = Field(
        default=None, description="File holding the SASL password (e.g. the `password` key of "
        "a Strimzi KafkaUser Secret, mounted); instead of CALLSCRIBE_KAFKA_SASL_PASSWORD.")
    kafka_ssl_ca_file: str | None = Field(
        default=None, description="PEM CA bundle that signs the brokers' certificates (SSL, "
        "SASL_SSL); unset: the system CAs. Host names are always checked.")
    kafka_ssl_cert_file: str | None = Field(
        default=None, description="PEM client certificate for mutual TLS (with _KEY_FILE).")
    kafka_ssl_key_file: str | None = Field(
        default=None, description="PEM private key of the client certificate (mutual TLS).")
    kafka_oauth_token_file: str | None = Field(
        default=None, description="OAUTHBEARER: file holding the token, re-read at every "
        "login (kept fresh by a sidecar or a projected volume).")
    kafka_oauth_token_command: str | None = Field(
        default=None, description="OAUTHBEARER: shell command that prints a token, run at "
        "every login (e.g. an MSK IAM or Confluent token helper).")

    @model_validator(mode="before")
    @classmethod
    def _read_old_names(cls, data: Any) -> Any:
        """Read each renamed setting from its old variable when its new one is unset."""
        if not cls.renamed or not isinstance(data, dict):
            return data
        env = {name.upper(): value for name, value in os.environ.items()}
        for field, old in cls.renamed.items():
            alias = cls.model_fields[field].validation_alias
            key = alias if isinstance(alias, str) else field
            if key in data or field in data or old not in env:
                continue
            data = {**data, key: env[old]}
            if old not in _warned:
                _warned.add(old)
                log.warning("%s is deprecated and will be ignored from the next release; "
                            "set %s instead", old, env_name(cls, field))
        return data

    @field_validator(
        "kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_username_file",
        "kafka_sasl_password", "kafka_sasl_password_file", "kafka_ssl_ca_file",
        "kafka_ssl_cert_file", "kafka_ssl_key_file", "kafka_oauth_token_file",
        "kafka_oauth_token_command", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """An empty variable (a ConfigMap key left blank) means unset."""
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _kafka_security_fits(self) -> KafkaSettings:
        """Refuse inconsistent Kafka security settings when the worker starts (files are read
        later, by :meth:`kafka_security`)."""
        for name in ("username", "password"):
            if getattr(self, f"kafka_sasl_{name}") is not None and \
                    getattr(self, f"kafka_sasl_{name}_file"):
                raise ValueError(f"set CALLSCRIBE_KAFKA_SASL_{name.upper()} or "
                                 f"CALLSCRIBE_KAFKA_SASL_{name.upper()}_FILE, not both")
        try:
            self._security(read_files=False)
        except KafkaSecurityError as exc:
            raise ValueError(str(exc)) from None
        return self

    def _security(self, *, read_files: bool) -> KafkaSecurity:
        from workers.kafka_security import read_secret_file

        def value(name: str, direct: str | None) -> str | None:
            path = getattr(self, f"kafka_sasl_{name}_file")
            if direct is not None or not path:
                return direct
            setting = f"CALLSCRIBE_KAFKA_SASL_{name.upper()}_FILE"
            return read_secret_file(path, setting) if read_files else f"<{setting}>"

        password = self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password \
            else None
        return KafkaSecurity(
            protocol=self.kafka_security_protocol, mechanism=self.kafka_sasl_mechanism,
            username=value("username", self.kafka_sasl_username),
            password=value("password", password),
            ca_file=self.kafka_ssl_ca_file, cert_file=self.kafka_ssl_cert_file,
            key_file=self.kafka_ssl_key_file, oauth_token_file=self.kafka_oauth_token_file,
            oauth_token_command=self.kafka_oauth_token_command)

    def kafka_security(self) -> KafkaSecurity:
        """The security of every Kafka client of this worker; reads the secret files now."""
        return self._security(read_files=True)

    @property
    def bootstrap(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.broker_port}"
