"""Settings of each worker, read from ``CALLSCRIBE_*`` environment variables.

Env is read only at the entry points (``workers.cli``); library classes take keyword arguments.
Every field is documented; ``docs/settings.md`` lists them all.

Names: ``CALLSCRIBE_`` + the field name, except where several workers have a setting of the same
name with a value of their own (consumer group, probe port, drain deadline, idle timeout): those
are ``CALLSCRIBE_<WORKER>_<NAME>`` (a ``validation_alias``), so that one environment (``callscribe
up``'s, a shared ConfigMap) can hold every worker's value.

A renamed setting keeps its old variable for one release: each class's ``renamed`` maps a field
to its old name, which is read when the new one is unset, with a deprecation warning logged
once per process (see :mod:`workers.settings_base`, home of the shared :class:`KafkaSettings`).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from workers import vocabulary as vocab
from workers.entities import parse_entities
from workers.ingest.dialects.audiohook import decode_secret
from workers.settings_base import KafkaSettings, env_name
from workers.transcribe import vad

__all__ = ["AssistSettings", "BridgeSettings", "IngestSettings", "KafkaSettings",
           "TranscribeSettings", "env_name"]



class IngestSettings(KafkaSettings):
    """The ingest worker (``callscribe ingest``)."""

    ingest_host: str = Field(default="0.0.0.0", description="Address the ingest server binds.")
    ingest_port: int = Field(default=8080, description="Port of the provider WebSocket server.")
    chunk_ms: int = Field(
        default=100, ge=10, le=1000, description="Duration of each audio record on the topic."
    )
    jambonz_username: str | None = Field(
        default=None, description="HTTP Basic user required on /jambonz when set."
    )
    jambonz_password: str | None = Field(
        default=None, description="HTTP Basic password required on /jambonz when set."
    )
    max_frame_bytes: int = Field(
        default=1 << 20, description="Largest WebSocket message accepted from a provider."
    )
    renamed: ClassVar[dict[str, str]] = {
        "ingest_max_in_flight": "CALLSCRIBE_PUBLISH_QUEUE_CHUNKS",
        "drain_seconds": "CALLSCRIBE_DRAIN_SECONDS",
    }

    ingest_max_in_flight: int = Field(
        default=200,
        ge=1,
        description="Records of a call handed to the Kafka producer and not yet acknowledged; "
        "the call's next records wait in its outbox (CALLSCRIBE_INGEST_BUFFER_S).",
    )
    ingest_buffer_s: float = Field(
        default=120.0, ge=1,
        description="Seconds of a call's audio (every channel) ingest holds until Kafka "
        "acknowledges it, e.g. through a broker outage: 1.9 MB for 8 kHz mono, 7.7 MB for 16 kHz "
        "stereo. A call holding this much stops being read (back-pressure to the provider; "
        "logged once, counted in callscribe_ingest_buffer_full_total); nothing is dropped.",
    )
    ingest_buffer_max_bytes: int = Field(
        default=256 << 20, ge=1 << 20,
        description="Bytes of call records every call of the process holds together until "
        "Kafka acknowledges them (256 MiB: about 70 Twilio calls of 8 kHz with both tracks for "
        "CALLSCRIBE_INGEST_BUFFER_S; keep it under the container's memory limit, 512 MiB in "
        "deploy/base). Beyond it every call's socket waits, as for CALLSCRIBE_INGEST_BUFFER_S.",
    )
    ingest_request_timeout_s: float = Field(
        default=30.0, gt=0,
        description="How long the ingest producer waits for Kafka's answer to a request before "
        "it sends it again (the records stay held, in order).",
    )
    ingest_delivery_timeout_s: float = Field(
        default=180.0, gt=0,
        description="How long ingest retries a record Kafka does not acknowledge (a broker "
        "outage) before the call fails: its socket is closed 1011. Longer than "
        "CALLSCRIBE_INGEST_REQUEST_TIMEOUT_S.",
    )
    drain_seconds: float = Field(
        default=20.0, validation_alias="CALLSCRIBE_INGEST_DRAIN_SECONDS",
        description="On SIGTERM, how long live calls may run on before close 1001."
    )
    ingest_allow_anonymous: bool = Field(
        default=False,
        description="Accept provider connections on a path whose credentials are unset "
        "(/jambonz without Basic credentials, /plivo or /twilio without an auth token, /telnyx "
        "without a stream token). False: such connections are refused at the handshake (401 "
        "on /jambonz and /telnyx, 403 on /plivo and /twilio). `callscribe up` sets it for the "
        "local stack. /audiohook and /vonage are never anonymous (CALLSCRIBE_AUDIOHOOK_API_KEY, "
        "CALLSCRIBE_VONAGE_TOKEN).",
    )
    ingest_open_timeout_s: float = Field(
        default=10.0, gt=0,
        description="A provider WebSocket handshake not completed in this time is dropped.",
    )
    ingest_max_connections_per_address: int = Field(
        default=1000, ge=0,
        description="Provider connections one client address may have open (or opening) per "
        "ingest process; more are refused with HTTP 429 (0: no cap). A media server opens one "
        "per call; behind a proxy every call shares its address.",
    )
    # --- providers (docs/providers.md) ---
    ingest_api_port: int = Field(
        default=8083,
        description="Port of the ingest HTTP API (POST /v1/subscriptions); the provider "
        "WebSocket server on CALLSCRIBE_INGEST_PORT takes only GET upgrades.",
    )
    api_keys: str | None = Field(
        default=None,
        description="Comma-separated Bearer API keys accepted by POST /v1/subscriptions (the "
        "bridge's keys). Unset: every subscription request is refused (401).",
    )
    ingest_public_url: str | None = Field(
        default=None,
        description="Base URL providers dial (e.g. wss://calls.example.com), against which "
        "Plivo and Twilio signatures are checked. Unset: wss:// and ws:// + the Host header.",
    )
    plivo_auth_token: str | None = Field(
        default=None,
        description="Plivo auth token: X-Plivo-Signature-V3 is checked on /plivo when set "
        "(close 1008 on mismatch); also the password of Plivo's REST API (hang-up, transfer).",
    )
    plivo_auth_id: str | None = Field(
        default=None,
        description="Plivo auth id for the REST API; unset: the stream's start.accountId.",
    )
    plivo_api_url: str = Field(
        default="https://api.plivo.com", description="Base URL of Plivo's REST API."
    )
    twilio_auth_token: str | None = Field(
        default=None,
        description="Twilio auth token: X-Twilio-Signature is checked on /twilio when set "
        "(403 on mismatch); also the password of Twilio's REST API (hang-up, transfer).",
    )
    twilio_account_sid: str | None = Field(
        default=None,
        description="Twilio account SID for the REST API; unset: the stream's "
        "start.accountSid.",
    )
    twilio_api_url: str = Field(
        default="https://api.twilio.com", description="Base URL of Twilio's REST API."
    )
    twilio_bidirectional: bool = Field(
        default=False,
        description="Whether Twilio streams are <Connect><Stream> (bidirectional: callscribe "
        "may send audio, marks, clear). A customParameter callscribeBidirectional=true|false "
        "overrides it per call; nothing is ever sent on a unidirectional stream.",
    )
    audiohook_api_key: str | None = Field(
        default=None,
        description="The API key of the Genesys Cloud AudioHook integration: the X-API-KEY "
        "header is checked on /audiohook (401 on mismatch). Unset: /audiohook refuses every "
        "connection (401), whatever CALLSCRIBE_INGEST_ALLOW_ANONYMOUS says.",
    )
    audiohook_client_secret: str | None = Field(
        default=None,
        description="The AudioHook integration's client secret (base64, as Genesys shows it). "
        "Set: the HTTP message signature (Signature, Signature-Input; HMAC-SHA256) is required "
        "on /audiohook and verified (401 when missing or wrong). Unset: not checked.",
    )
    audiohook_transcripts: Literal["off", "raw", "redacted"] = Field(
        default="off",
        description="Send each final transcript of an AudioHook session back to Genesys as an "
        "event message (transcript entity) on that session. off: nothing is sent (no consumer "
        "runs). raw: from the transcripts topic, as the transcriber wrote them (the customer's "
        "own words to the customer's own Genesys org). redacted: from the assist worker's "
        "transcripts.redacted topic (PII/PCI replaced by placeholders; needs the assist worker, "
        "arrives later). Interims are never sent.",
    )
    vonage_token: str | None = Field(
        default=None,
        description="A shared token Vonage must present on /vonage (Vonage signs nothing on the "
        "WebSocket upgrade): put it in the NCCO websocket uri as ?token=<it>, or send it as "
        "Authorization: Bearer; 401 on mismatch. Unset: /vonage refuses every connection (401), "
        "whatever CALLSCRIBE_INGEST_ALLOW_ANONYMOUS says.",
    )
    vonage_application_id: str | None = Field(
        default=None,
        description="The Vonage application's id, for Voice API call control (hang-up, "
        "transfer): callscribe signs an application JWT (RS256) with "
        "CALLSCRIBE_VONAGE_PRIVATE_KEY for each request. Unset: those commands fail with "
        "call.control_failed.",
    )
    vonage_private_key: SecretStr | None = Field(
        default=None,
        description="The Vonage application's private key (PEM, the private.key Vonage gives "
        "when the application is created), signing the Voice API's application JWTs.",
    )
    vonage_private_key_file: str | None = Field(
        default=None,
        description="File holding the Vonage application's private key (a mounted secret); "
        "instead of CALLSCRIBE_VONAGE_PRIVATE_KEY. Read when the worker starts.",
    )
    vonage_api_url: str = Field(
        default="https://api.nexmo.com",
        description="Base URL of Vonage's Voice API (without /v1), e.g. a regional one "
        "(https://api-us.nexmo.com).",
    )
    telnyx_token: str | None = Field(
        default=None,
        description="The stream auth token Telnyx must present on /telnyx (Telnyx sends a "
        "stream's auth token as the x-telnyx-streaming-auth-token header; ?token=<it> in the "
        "stream_url or Authorization: Bearer are accepted too); 401 on mismatch. Unset: not "
        "checked, and /telnyx is refused (401) unless CALLSCRIBE_INGEST_ALLOW_ANONYMOUS.",
    )
    telnyx_api_key: str | None = Field(
        default=None,
        description="Telnyx API key (Bearer) for Call Control: hang-up and transfer of Telnyx "
        "calls; unset: those commands fail with call.control_failed.",
    )
    telnyx_api_url: str = Field(
        default="https://api.telnyx.com", description="Base URL of Telnyx's REST API (without "
        "/v2)."
    )
    telnyx_tracks: Literal["inbound_track", "outbound_track", "both_tracks"] = Field(
        default="inbound_track",
        description="The stream_track Telnyx streams use (Telnyx's start message does not say): "
        "inbound_track (the caller, role other), outbound_track (played to the caller, "
        "assistant) or both_tracks. A custom parameter callscribeTracks overrides it per call; "
        "media of a track not announced is ignored and counted.",
    )
    telnyx_bidirectional: bool = Field(
        default=False,
        description="Whether Telnyx streams are RTP bidirectional (stream_bidirectional_mode=rtp "
        "with stream_bidirectional_codec and _sampling_rate matching the stream's codec): "
        "callscribe may send media, mark and clear. A custom parameter "
        "callscribeBidirectional=true|false overrides it per call; otherwise nothing is sent.",
    )
    jambonz_api_url: str | None = Field(
        default=None,
        description="Base URL of the jambonz REST API (e.g. https://jambonz.example.com/api, "
        "without /v1) for hang-up and transfer; unset: those commands fail for jambonz calls.",
    )
    jambonz_api_key: str | None = Field(
        default=None, description="Bearer API key of the jambonz REST API."
    )
    bland_api_url: str = Field(
        default="https://api.bland.ai",
        description="Base URL of Bland's API (live listen, stop, transfer).",
    )
    bland_api_key: str | None = Field(
        default=None,
        description="Bland API key, sent as 'authorization: <key>'; unset: Bland "
        "subscriptions fail (INVALID_ORG_PREFERENCES is not retried either).",
    )
    bland_retry_s: float = Field(
        default=60.0, ge=0,
        description="How long a Bland subscription retries CALL_NOT_FOUND (call not answered "
        "yet) and server errors, with backoff, before giving up.",
    )
    transfer_target: str | None = Field(
        default=None,
        description="Where client:joinCall transfers the call (E.164 number or SIP URI); "
        "unset: joinCall fails with call.control_failed.",
    )
    transfer_hook_url: str | None = Field(
        default=None,
        description="For providers that transfer by running a new document (Plivo aleg_url, "
        "jambonz call_hook): the URL of one that dials the target; {target} and {call_id} "
        "are replaced. Twilio (inline TwiML) and Bland (transfer API) do not need it.",
    )
    ingest_group_id: str = Field(
        default="callscribe-ingest",
        description="Kafka consumer group sharing subscription requests among ingest replicas.",
    )

    @field_validator(
        "jambonz_username", "jambonz_password", "api_keys", "ingest_public_url",
        "plivo_auth_token", "plivo_auth_id", "twilio_auth_token", "twilio_account_sid",
        "jambonz_api_url", "jambonz_api_key", "bland_api_key", "transfer_target",
        "transfer_hook_url", "audiohook_api_key", "audiohook_client_secret",
        "vonage_token", "telnyx_token", "telnyx_api_key", "vonage_application_id",
        "vonage_private_key_file")
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        """An empty variable (a ConfigMap or Secret key left blank) means unset."""
        return value.strip() or None if value else None

    @field_validator("vonage_private_key", mode="before")
    @classmethod
    def _empty_key_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _delivery_outlives_requests(self) -> IngestSettings:
        if self.ingest_delivery_timeout_s < self.ingest_request_timeout_s:
            raise ValueError(
                f"CALLSCRIBE_INGEST_DELIVERY_TIMEOUT_S ({self.ingest_delivery_timeout_s:g}) must "
                f"be at least CALLSCRIBE_INGEST_REQUEST_TIMEOUT_S "
                f"({self.ingest_request_timeout_s:g}): a record is retried until it is that old")
        return self

    @model_validator(mode="after")
    def _vonage_key(self) -> IngestSettings:
        """Read CALLSCRIBE_VONAGE_PRIVATE_KEY_FILE into the key, and refuse a key that is not
        a PEM RSA private key, or half of the Vonage credentials, when the worker starts."""
        if self.vonage_private_key_file:
            if self.vonage_private_key is not None:
                raise ValueError("set CALLSCRIBE_VONAGE_PRIVATE_KEY or "
                                 "CALLSCRIBE_VONAGE_PRIVATE_KEY_FILE, not both")
            try:
                pem = Path(self.vonage_private_key_file).read_text()
            except OSError as exc:
                raise ValueError(f"CALLSCRIBE_VONAGE_PRIVATE_KEY_FILE="
                                 f"{self.vonage_private_key_file}: cannot read it "
                                 f"({exc.strerror})") from None
            self.vonage_private_key = SecretStr(pem)
        if self.vonage_private_key is not None:
            from workers.ingest.providers.vonage import check_private_key

            check_private_key(self.vonage_private_key.get_secret_value())
        if (self.vonage_private_key is None) != (self.vonage_application_id is None):
            raise ValueError("set both CALLSCRIBE_VONAGE_APPLICATION_ID and "
                             "CALLSCRIBE_VONAGE_PRIVATE_KEY (or _FILE), or neither")
        return self

    @field_validator("audiohook_client_secret", mode="after")
    @classmethod
    def _base64_secret(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                decode_secret(value)
            except ValueError:
                raise ValueError("CALLSCRIBE_AUDIOHOOK_CLIENT_SECRET is not base64 "
                                 "(paste the client secret as Genesys shows it)") from None
        return value

    def api_key_set(self) -> frozenset[str]:
        return frozenset(k.strip() for k in (self.api_keys or "").split(",") if k.strip())


class TranscribeSettings(KafkaSettings):
    """The transcription worker (``callscribe transcribe``)."""

    renamed: ClassVar[dict[str, str]] = {
        "drain_seconds": "CALLSCRIBE_DRAIN_SECONDS",
        "group_id": "CALLSCRIBE_GROUP_ID",
        "web_port": "CALLSCRIBE_WEB_PORT",
    }

    whisper_model: str | None = Field(
        default=None,
        description="faster-whisper model name or path; unset = the bundled tiny.en.",
    )
    device: Literal["cpu", "cuda", "auto"] = Field(
        default="cpu", description="Where whisper runs."
    )
    compute_type: str = Field(
        default="default",
        description="CTranslate2 compute type; 'default' = int8 on CPU, float16 on CUDA.",
    )
    cpu_threads: int = Field(default=0, ge=0, description="Whisper CPU threads; 0 = all cores.")
    decode_lanes: int = Field(
        default=0, ge=0,
        description="Whisper decodes run at once, each on a model replica with cpu_threads / "
        "decode_lanes threads; the first lane decodes finals, the others interims, so a final "
        "never waits for an interim. 0: one lane per core, at most 2, on CPU (two 1-thread "
        "lanes decode ~1.6 times as fast as one 2-thread lane); 1 on CUDA.",
    )
    beam_size: int = Field(default=1, ge=1, description="Whisper beam size (1 = greedy).")
    language: str = Field(default="en", description="Language spoken on calls.")
    word_timestamps: bool = Field(
        default=False,
        description="Add each word's start and end (seconds from call start) to transcripts "
        "as 'words'. Costs a decode per utterance (no batching across calls).",
    )
    vad_aggressiveness: int = Field(
        default=vad.DEFAULT_AGGRESSIVENESS, ge=0, le=3,
        description="webrtcvad aggressiveness, 0 (lenient) to 3."
    )
    vad_frame_ms: int = Field(
        default=vad.DEFAULT_FRAME_MS, description="VAD frame length: 10, 20 or 30 ms.")
    vad_max_gain_db: float = Field(
        default=vad.DEFAULT_MAX_GAIN_DB, ge=0, le=40,
        description="Most gain (dB) the VAD's input gets on a quiet line, so speech peaking "
        "near -50 dBFS is still found; whisper hears the audio unchanged. 0: no gain.",
    )
    vad_start_ms: int = Field(
        default=vad.DEFAULT_START_MS, description="Voiced audio needed to open an utterance."
    )
    vad_end_silence_ms: int = Field(
        default=vad.DEFAULT_END_SILENCE_MS, description="Silence that closes an utterance."
    )
    vad_soft_after_ms: int = Field(
        default=vad.DEFAULT_SOFT_AFTER_MS, ge=0,
        description="Once an utterance holds this much audio, a pause of vad_soft_silence_ms "
        "closes it (a breath inside a long turn), so decode windows stay short even when load "
        "leaves no time for interims (which close committed sentences). 0: off (the default: "
        "at 3000 it cost 0.5 WER points on 8 kHz read speech in bench.eval_wer).",
    )
    vad_soft_silence_ms: int = Field(
        default=vad.DEFAULT_SOFT_SILENCE_MS,
        description="The unvoiced run that closes an utterance longer than "
        "vad_soft_after_ms (webrtcvad's hangover hides ~120 ms of each pause: 150 ms is a "
        "~270 ms breath).",
    )
    vad_padding_ms: int = Field(
        default=vad.DEFAULT_PADDING_MS,
        description="Audio kept before an utterance's first voiced frame."
    )
    min_utterance_ms: int = Field(
        default=vad.DEFAULT_MIN_UTTERANCE_MS,
        description="Utterances shorter than this are dropped as noise."
    )
    max_utterance_s: float = Field(
        default=vad.DEFAULT_MAX_UTTERANCE_MS / 1000,
        description="Utterances are cut at this length (at a pause if one comes)."
    )
    interim_ms: int = Field(
        default=400, ge=0,
        description="While an utterance is open, decode it again after this much new audio "
        "and send a transcript:interim (0: no interims).",
    )
    early_finals: bool = Field(
        default=True,
        description="Decode an utterance while the end-of-speech wait (vad_end_silence_ms) "
        "runs, once the trailing silence its final keeps has passed: when the wait ends with "
        "no more speech, the final is that decode's text, sent at once; when speech goes on, "
        "the decode served as an interim.",
    )
    commit_at_pauses: bool = Field(
        default=True,
        description="An early decode (made in a pause of the speaker, see early_finals) "
        "commits its words but the last at once, instead of waiting for a second decode to "
        "agree with them (interims only).",
    )
    interims: Literal["always", "watched"] = Field(
        default="always",
        description="Which calls get interims: 'always' (every call; consumers of the "
        "transcripts topic get them) or 'watched' (only calls a liveCalls client watches with "
        "interim=true, as the bridges publish on the interest topic; the others get finals "
        "and early decodes only, which saves ~70 % of whisper's decodes). A call that becomes "
        "watched gets interims from its next audio on.",
    )
    interim_budget_ms: int = Field(
        default=700, ge=10,
        description="Interims are decoded only while no final waits, round-robin across call "
        "channels, as many in one batch as are estimated to take this long: the longest a "
        "final can wait behind interims.",
    )
    interim_share: float = Field(
        default=0.5, gt=0, le=1,
        description="Most of the decoder's time interims may take while finals need the "
        "rest (scaled by the decoder time finals and early decodes took in the last 5 s: an "
        "idle decoder serves interims back to back); under load interims come less often.",
    )
    whisper_windows: str = Field(
        default="15,30",
        description="Encoder window sizes in seconds: each utterance is decoded in the "
        "smallest that holds it plus 1 s of silence (the encoder's cost grows with the window: "
        "~60 ms at 10 s, ~105 ms at 15 s, ~430 ms at 30 s on 2 cores). 15,30 keeps WER within "
        "0.3 points of whole 30 s windows at 16 and 8 kHz; 10,15,30 is ~25 % cheaper and costs "
        "0.3-0.9 points (bench.windows). Empty: always the whole window (whisper_chunk_s).",
    )
    whisper_interim_windows: str = Field(
        default="10,15,30",
        description="Encoder windows for interims (an open utterance is decoded again and "
        "again, so they cost the most): a 10 s window encodes in ~60 % of the time of a 15 s "
        "one. Finals use whisper_windows.",
    )
    whisper_chunk_s: int | None = Field(
        default=None, ge=1, le=30,
        description="Audio per whisper window in seconds (unset: the model's 30 s). Utterances "
        "longer than it are decoded in several windows; keep it >= max_utterance_s so every "
        "utterance fits one window and can be batched with others.",
    )
    min_dbfs: float = Field(
        default=-70.0,
        description="Audio quieter than this (RMS dBFS) is never decoded. Quiet real speech "
        "measures -59 to -67 dBFS in the eval set, so the gate sits below it.",
    )
    drain_seconds: float = Field(
        default=10.0, validation_alias="CALLSCRIBE_TRANSCRIBE_DRAIN_SECONDS",
        description="On SIGTERM, how long queued utterances may still decode."
    )
    decode_queue: int = Field(
        default=64, ge=2, description="Decode jobs waiting before the consumer is paused."
    )
    decode_batch: int = Field(
        default=8, ge=1, description="Most utterances decoded in one trip to whisper."
    )
    call_idle_timeout_s: float = Field(
        default=120.0,
        description="A call with no record for this long is closed (its ingest died); time "
        "while the Kafka brokers do not answer (the worker's probe) is not counted.",
    )
    vocabulary: str | None = Field(
        default=None,
        description="Custom vocabulary file (CALLSCRIBE_VOCABULARY): product names, plan names "
        "and jargon, one term a line, # starts a comment line; given to whisper as previous "
        "text on every decode, before each call's own terms (a 'vocabulary' key in the "
        "provider's start metadata or custom parameters). Unset: none, decodes as before.",
    )
    vocabulary_max_tokens: int = Field(
        default=vocab.DEFAULT_MAX_TOKENS, ge=1, le=vocab.MAX_PROMPT_TOKENS,
        description="Most whisper tokens the vocabulary prompt may take (about 2-3 per term; "
        "whisper's own bound is 223): a longer file is refused at start-up, and whole terms "
        "are dropped from the front (the deployment's first) when a call's terms would go "
        "past it. Every decode with a vocabulary attends to these tokens.",
    )
    speakers: bool = Field(
        default=True,
        description="Separate the speakers of calls whose one channel mixes both parties "
        "(see speakers_mixes) with voice prints, and give each line the role of its speaker "
        "(docs/speakers.md). Needs the 'speakers' extra (pip install 'callscribe[speakers]'); "
        "without it such calls keep the channel's role, with one log line. Off: never.",
    )
    speakers_mixes: str = Field(
        default="mixed",
        description="The call.started 'mix' values whose channel holds both parties, comma "
        "separated: 'mixed' (Bland, jambonz mixType mixed); add 'mono' where your one-track "
        "Plivo, Twilio or jambonz streams carry both legs.",
    )
    speakers_first: Literal["assistant", "other"] = Field(
        default="assistant",
        description="The role of the first voice heard on a mixed call (on a Bland call the "
        "AI agent greets first); the other voice gets the other role. A call's start metadata "
        "key 'speakersFirst' (assistant or other) overrides it.",
    )
    speakers_new_below: float = Field(
        default=0.70, gt=0, lt=1,
        description="A voice print whose cosine similarity to every known speaker of the call "
        "is below this starts the second speaker (bench.roles measures the choice; a second "
        "voice closer than this is still found when the call's windows are clustered again).",
    )
    group_id: str = Field(
        default="callscribe-transcribe", validation_alias="CALLSCRIBE_TRANSCRIBE_GROUP_ID",
        description="Kafka consumer group.")
    web_port: int = Field(
        default=8081, validation_alias="CALLSCRIBE_TRANSCRIBE_WEB_PORT",
        description="Port for /healthz, /readyz and /metrics.")
    data_dir: str | None = Field(
        default=None,
        description="Where faust keeps its local state; unset: a folder in the system temp "
        "directory named after the consumer group.",
    )

    @field_validator("vad_frame_ms")
    @classmethod
    def _webrtcvad_frame(cls, value: int) -> int:
        if value not in (10, 20, 30):
            raise ValueError(f"VAD frames of {value} ms; webrtcvad takes 10, 20 or 30")
        return value


class BridgeSettings(KafkaSettings):
    """The liveCalls bridge (``callscribe bridge``)."""

    bridge_host: str = Field(default="0.0.0.0", description="Address the bridge binds.")
    bridge_port: int = Field(default=8090, description="Port of liveCalls, the API and web view.")
    api_keys: str | None = Field(
        default=None,
        description="Comma-separated Bearer API keys accepted by the bridge. `up` generates one "
        "when unset.",
    )
    token_secret: str | None = Field(
        default=None,
        description="Secret that signs conversation tokens (HS256); shared with `callscribe "
        "token`.",
    )
    token_ttl_s: int = Field(default=3600, description="Lifetime of a conversation token.")
    bridge_max_connections_per_address: int = Field(
        default=200, ge=0,
        description="liveCalls and live-listen WebSockets one client address may have open "
        "per bridge process; more are refused with HTTP 429 before the upgrade (0: no cap). "
        "Agents behind one NAT share an address: size it to the agents per office.",
    )
    client_queue_max: int = Field(
        default=256,
        description="Messages a liveCalls client may have unsent before it is closed (1013).",
    )
    history_calls: int = Field(
        default=1000, description="Calls whose messages the bridge keeps for replay."
    )
    bridge_source: Literal["redacted", "raw"] = Field(
        default="redacted",
        description="Which transcripts the bridge serves: 'redacted' (the assist worker's "
        "output, with assist messages; PII never reaches a UI) or 'raw' (the transcriber's, "
        "for deployments without the assist worker).",
    )
    history_messages: int = Field(
        default=5000, description="Messages kept per call for replay."
    )
    live_listen_enabled: bool = Field(
        default=True,
        description="Serve supervisor live listen (POST /v1/calls/{call_id}/listen and its "
        "audio URLs); false answers Bland's INVALID_ORG_PREFERENCES.",
    )
    bridge_interest_s: float = Field(
        default=15.0, ge=0,
        description="While a liveCalls client watches a call with interim=true, the bridge "
        "says so on the interest topic every this many seconds (the interest lapses after "
        "twice that), for transcribers with CALLSCRIBE_INTERIMS=watched (0: never publish).",
    )
    bridge_public_url: str | None = Field(
        default=None,
        description="Base URL of this bridge as clients reach it (e.g. wss://bridge.example.com)"
        ", used in live-listen URLs. Unset: ws:// (wss:// behind X-Forwarded-Proto: https) "
        "and the request's Host.",
    )

    @field_validator("token_secret")
    @classmethod
    def _long_enough(cls, value: str | None) -> str | None:
        """RFC 7518 §3.2: an HS256 key at least as long as the hash (32 bytes); blank: unset."""
        from workers.bridge.tokens import MIN_SECRET_BYTES

        value = value.strip() or None if value else None
        if value is not None and len(value.encode()) < MIN_SECRET_BYTES:
            raise ValueError(
                f"CALLSCRIBE_TOKEN_SECRET is {len(value.encode())} bytes; expected at least "
                f"{MIN_SECRET_BYTES} (e.g. python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))')")
        return value

    @field_validator("bridge_public_url")
    @classmethod
    def _empty_url_is_unset(cls, value: str | None) -> str | None:
        return value.strip().rstrip("/") or None if value else None

    def api_key_set(self) -> frozenset[str]:
        return frozenset(k.strip() for k in (self.api_keys or "").split(",") if k.strip())


class AssistSettings(KafkaSettings):
    """The agent-assist worker (``callscribe assist``).

    ``group_id``, ``web_port`` and ``idle_timeout_s`` read ``CALLSCRIBE_ASSIST_*`` variables,
    like the transcriber's read ``CALLSCRIBE_TRANSCRIBE_*`` (see the module docstring).
    """

    playbook: Path | None = Field(
        default=None,
        description="YAML playbook of hint rules, disclosures, sentiment and knowledge-base "
        "settings (CALLSCRIBE_PLAYBOOK); unset = the bundled support-line example.",
    )
    kb_dir: Path | None = Field(
        default=None,
        description="Folder of Markdown knowledge articles (CALLSCRIBE_KB_DIR); unset = the "
        "bundled examples.",
    )
    kb_enabled: bool = Field(
        default=True, description="Suggest knowledge articles (CALLSCRIBE_KB_ENABLED)."
    )
    redact: str = Field(
        default="all",
        description="Entities to redact (CALLSCRIBE_REDACT): all, none, or a comma-separated "
        "list of CARD, CVV, EXPIRY, SSN, EMAIL, PHONE.",
    )
    redact_caller_id: bool = Field(
        default=False,
        description="Also blank the caller's number in event:start on the redacted topic "
        "(CALLSCRIBE_REDACT_CALLER_ID; only when PHONE is redacted).",
    )
    summary_sentences: int = Field(
        default=3, ge=0, le=20,
        description="Key sentences in each call summary (CALLSCRIBE_SUMMARY_SENTENCES).",
    )
    summary_grace_s: float = Field(
        default=5.0, ge=0,
        description="After event:callEnd, how long to wait for call.ended (its duration) "
        "before summarising without it (CALLSCRIBE_SUMMARY_GRACE_S).",
    )
    idle_timeout_s: float = Field(
        default=900.0, gt=0, validation_alias="CALLSCRIBE_ASSIST_IDLE_TIMEOUT_S",
        description="A call with no record for this long is summarised and forgotten "
        "(CALLSCRIBE_ASSIST_IDLE_TIMEOUT_S).",
    )
    group_id: str = Field(
        default="callscribe-assist", validation_alias="CALLSCRIBE_ASSIST_GROUP_ID",
        description="Kafka consumer group (CALLSCRIBE_ASSIST_GROUP_ID).",
    )
    web_port: int = Field(
        default=8082, validation_alias="CALLSCRIBE_ASSIST_WEB_PORT",
        description="Port for /healthz, /readyz and /metrics (CALLSCRIBE_ASSIST_WEB_PORT).",
    )

    @field_validator("redact")
    @classmethod
    def _known_entities(cls, value: str) -> str:
        parse_entities(value)  # raises ValueError naming the unknown entities
        return value

    @property
    def redact_entities(self) -> frozenset[str]:
        return parse_entities(self.redact)
