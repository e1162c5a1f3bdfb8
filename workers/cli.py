"""The ``callscribe`` command: run each worker, the whole stack, simulators and clients.

Env is read here (and only here) into each worker's settings class.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
import signal
import sys
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from workers import deadline, localenv, logs
from workers.deadline import StopDeadline
from workers.errors import UsageError
from workers.records import Topics
from workers.settings import (
    AssistSettings,
    BridgeSettings,
    IngestSettings,
    KafkaSettings,
    TranscribeSettings,
)
from workers.simulate.audiohook_cli import command as simulate_audiohook_command
from workers.simulate.options import Dtmf, Fast, StereoWav, Tracks
from workers.simulate.telnyx_cli import command as simulate_telnyx_command
from workers.simulate.vonage_cli import command as simulate_vonage_command

log = logging.getLogger("callscribe")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="callscribe: live call transcription and agent assist on Kafka.")
simulate_app = typer.Typer(no_args_is_help=True, help="Play a WAV as a provider would.")
app.add_typer(simulate_app, name="simulate")

T = TypeVar("T")
_debug = False


@app.callback()
def _options(debug: Annotated[bool, typer.Option(
        "--debug", envvar="CALLSCRIBE_DEBUG",
        help="Show the full traceback when a command fails.")] = False) -> None:
    global _debug  # one flag for main() to read after the command fails
    _debug = debug


def prog() -> str:
    """How the user called us, for commands to paste (``.venv/bin/callscribe``, or
    ``callscribe`` when run as ``python -m workers.cli``)."""
    called = sys.argv[0] if sys.argv else ""
    return called if Path(called).name == "callscribe" else "callscribe"


def _client_env() -> None:
    """Take what ``callscribe up`` wrote to .callscribe/env where the environment is unset."""
    localenv.load()


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``; Ctrl-C ends the command quietly with 130."""
    try:
        return asyncio.run(coroutine)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _ensure_topics(settings: KafkaSettings) -> None:
    from workers.kafka import ensure_topics

    asyncio.run(ensure_topics(settings.bootstrap, Topics(settings.topic_prefix).all(),
                              partitions=settings.topic_partitions,
                              replication=settings.topic_replication,
                              security=settings.kafka_security()))


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


@app.command()
def broker() -> None:
    """Run the embedded Tansu broker (memory storage) on CALLSCRIBE_BROKER_PORT."""
    from workers.broker import EmbeddedBroker

    logs.configure("broker")
    settings = KafkaSettings()
    with EmbeddedBroker(port=settings.broker_port) as embedded:
        typer.echo(f"Kafka-protocol broker on {embedded.bootstrap} (Ctrl-C stops it)")
        with contextlib.suppress(KeyboardInterrupt):
            embedded.wait()


@app.command()
def ingest() -> None:
    """Run the ingest worker: provider WebSockets on CALLSCRIBE_INGEST_PORT → Kafka, the
    subscription API on CALLSCRIBE_INGEST_API_PORT, and call control for its calls."""
    from workers.ingest.audiohook_events import source_topic
    from workers.kafka import ensure_topics

    logs.configure("ingest")
    settings = IngestSettings()
    topics = Topics(settings.topic_prefix)
    # The AudioHook transcripts' source too (redacted: the assist worker's, maybe not up yet).
    source = source_topic(settings.audiohook_transcripts, topics)
    asyncio.run(ensure_topics(settings.bootstrap, (*topics.all(), topics.subscriptions,
                                                   *((source,) if source else ())),
                              partitions=settings.topic_partitions,
                              replication=settings.topic_replication,
                              security=settings.kafka_security()))
    asyncio.run(_run_ingest(settings))


async def _run_ingest(settings: IngestSettings) -> None:
    from workers.ingest.worker import IngestWorker
    from workers.kafka import AUDIO_BATCH_BYTES, new_producer, start_producer

    security = settings.kafka_security()
    producer = new_producer(
        settings.bootstrap, client_id="callscribe-ingest", security=security,
        max_batch_size=AUDIO_BATCH_BYTES,
        request_timeout_ms=int(settings.ingest_request_timeout_s * 1000),
        delivery_timeout_ms=int(settings.ingest_delivery_timeout_s * 1000))
    await start_producer(producer, security=security)
    worker = IngestWorker(settings, producer, security=security)
    await worker.start()
    await _until_signalled()
    StopDeadline("ingest", settings.drain_seconds + deadline.INGEST_AFTER_DRAIN_S).arm()
    await worker.drain(settings.drain_seconds)
    await producer.stop()


def _run_faust(faust_app: Any, stop_deadline: StopDeadline) -> None:
    import faust

    class Worker(faust.Worker):
        """faust's worker, which keeps ``stop_deadline`` once a signal asks it to stop."""

        def _on_sigint(self) -> None:
            stop_deadline.arm()
            super()._on_sigint()

        def _on_sigterm(self) -> None:
            stop_deadline.arm()
            super()._on_sigterm()

    worker = Worker(faust_app, loglevel="WARNING", quiet=True, redirect_stdouts=False,
                    override_logging=False)
    # Its spinner writes cursor escape codes even when stdout is a log file.
    worker.spinner = None
    worker.execute_from_commandline()


@app.command()
def transcribe() -> None:
    """Run the transcription worker (faust-streaming): audio → VAD → whisper → transcripts."""
    from workers.transcribe.app import create_app
    from workers.transcribe.asr import Transcriber
    from workers.vocabulary import VocabularyError, load_vocabulary

    logs.configure("transcribe")
    settings = TranscribeSettings()
    try:  # a bad vocabulary file fails here, before Kafka is touched
        terms = load_vocabulary(settings.vocabulary)
        transcriber = Transcriber(model=settings.whisper_model, device=settings.device,
                                  compute_type=settings.compute_type,
                                  cpu_threads=settings.cpu_threads,
                                  lanes=settings.decode_lanes,
                                  beam_size=settings.beam_size, language=settings.language,
                                  chunk_length=settings.whisper_chunk_s,
                                  min_dbfs=settings.min_dbfs,
                                  word_timestamps=settings.word_timestamps,
                                  windows=settings.whisper_windows,
                                  interim_windows=settings.whisper_interim_windows,
                                  vocabulary=terms,
                                  vocabulary_max_tokens=settings.vocabulary_max_tokens)
    except VocabularyError as exc:
        raise UsageError(f"CALLSCRIBE_VOCABULARY: {exc}", exit_code=2) from None
    _ensure_topics(settings)
    faust_app = create_app(settings, transcriber)
    _run_faust(faust_app, StopDeadline(
        "transcribe", settings.drain_seconds + deadline.TRANSCRIBE_AFTER_DRAIN_S))


@app.command()
def assist() -> None:
    """Run the agent-assist worker (faust-streaming): transcripts → redaction, hints,
    knowledge articles, sentiment alerts and call summaries."""
    from workers.assist.app import assist_topics, build_engine, create_app
    from workers.assist.errors import AssistConfigError
    from workers.kafka import ensure_topics

    logs.configure("assist")
    settings = AssistSettings()
    try:
        engine = build_engine(settings)  # a bad playbook fails here, before Kafka is touched
    except AssistConfigError as exc:
        typer.echo(f"callscribe assist: {exc}", err=True)
        raise typer.Exit(2) from None
    topics = Topics(settings.topic_prefix)
    asyncio.run(ensure_topics(settings.bootstrap, (*topics.all(), *assist_topics(topics)),
                              partitions=settings.topic_partitions,
                              replication=settings.topic_replication,
                              security=settings.kafka_security()))
    faust_app = create_app(settings, engine)
    _run_faust(faust_app, StopDeadline("assist", deadline.ASSIST_S))


@app.command()
def bridge() -> None:
    """Run the liveCalls bridge on CALLSCRIBE_BRIDGE_PORT."""
    from aiohttp import web

    from workers.bridge.hub import CallHub
    from workers.bridge.server import Bridge
    from workers.bridge.tokens import TokenIssuer

    logs.configure("bridge")
    settings = BridgeSettings()
    keys = settings.api_key_set()
    if not keys:
        raise typer.BadParameter("set CALLSCRIBE_API_KEYS (comma-separated Bearer keys)")
    secret = settings.token_secret
    if not secret:
        secret = secrets.token_urlsafe(32)
        log.warning("CALLSCRIBE_TOKEN_SECRET is unset; tokens from this bridge's POST "
                    "/v1/tokens only, and they die with it")
    topics = Topics(settings.topic_prefix)
    source = topics.transcripts_redacted if settings.bridge_source == "redacted" \
        else topics.transcripts
    from workers.kafka import ensure_topics

    security = settings.kafka_security()
    asyncio.run(ensure_topics(settings.bootstrap, (*topics.all(), source),
                              partitions=settings.topic_partitions,
                              replication=settings.topic_replication, security=security))
    server = Bridge(bootstrap=settings.bootstrap, security=security, topics=topics,
                    transcripts_topic=source,
                    api_keys=keys, issuer=TokenIssuer(secret, settings.token_ttl_s),
                    hub=CallHub(max_calls=settings.history_calls,
                                max_messages=settings.history_messages),
                    client_queue_max=settings.client_queue_max,
                    fetch_max_wait_ms=settings.fetch_max_wait_ms,
                    live_listen_enabled=settings.live_listen_enabled,
                    public_url=settings.bridge_public_url,
                    interest_s=settings.bridge_interest_s,
                    max_connections_per_address=settings.bridge_max_connections_per_address)
    # Thousands of connections make every full collection a 200-300 ms pause of all fan-out;
    # fewer young collections promote far fewer short-lived objects (bench/README.md, fanout).
    gc.set_threshold(50_000, *gc.get_threshold()[1:])
    bridge_app = server.web_app()
    stop_deadline = StopDeadline("bridge", deadline.BRIDGE_S)

    async def arm(_: web.Application) -> None:
        stop_deadline.arm()

    bridge_app.on_shutdown.insert(0, arm)
    web.run_app(bridge_app, host=settings.bridge_host, port=settings.bridge_port,
                print=None, shutdown_timeout=10.0)


_NO_SECRET = ("set CALLSCRIBE_TOKEN_SECRET (the bridge's), or run this where `callscribe up` "
              f"is running: it writes {localenv.ENV_FILE}")


@app.command()
def token(call_id: Annotated[str, typer.Argument(help="The call to watch.")]) -> None:
    """Print a conversation token for CALL_ID (signed with CALLSCRIBE_TOKEN_SECRET, or the
    secret `callscribe up` wrote to .callscribe/env)."""
    from workers.bridge.tokens import TokenIssuer

    _client_env()
    settings = BridgeSettings()
    if not settings.token_secret:
        raise UsageError(_NO_SECRET, exit_code=2)
    typer.echo(TokenIssuer(settings.token_secret, settings.token_ttl_s).mint(call_id)[0])


def _bridge_base(settings: BridgeSettings, option: str) -> str:
    return option or os.environ.get("CALLSCRIBE_BRIDGE_URL") \
        or f"http://127.0.0.1:{settings.bridge_port}"


def _api_key(settings: BridgeSettings) -> str:
    keys = sorted(settings.api_key_set())
    if not keys:
        raise UsageError("set CALLSCRIBE_API_KEYS (the bridge's), or run this where "
                         f"`callscribe up` is running: it writes {localenv.ENV_FILE}",
                         exit_code=2)
    return keys[0]


@app.command()
def watch(
    call_id: Annotated[str, typer.Argument(help="The call to watch (`callscribe calls`).")],
    bridge_url: Annotated[str, typer.Option("--bridge", help="Bridge base URL (default: "
                                            "CALLSCRIBE_BRIDGE_URL or the local bridge).")] = "",
    interim: Annotated[bool, typer.Option(help="Also show interim transcripts.")] = False,
    wait: Annotated[float, typer.Option(help="Seconds to wait for a call that has not "
                                        "started yet.")] = 0.0,
) -> None:
    """Print a call's liveCalls messages as they arrive (a terminal liveCalls client)."""
    from workers.bridge.tokens import TokenIssuer
    from workers.clients import watch as watch_call
    from workers.clients import ws_url

    _client_env()
    settings = BridgeSettings()
    key = _api_key(settings)
    if not settings.token_secret:
        raise UsageError(_NO_SECRET, exit_code=2)
    conversation = TokenIssuer(settings.token_secret, settings.token_ttl_s).mint(call_id)[0]
    _run(watch_call(ws_url(_bridge_base(settings, bridge_url)), conversation, key,
                    interim=interim, wait_s=wait, echo=typer.echo))


@app.command()
def calls(
    bridge_url: Annotated[str, typer.Option("--bridge", help="Bridge base URL (default: "
                                            "CALLSCRIBE_BRIDGE_URL or the local bridge).")] = "",
) -> None:
    """List the live calls the bridge knows (GET /v1/calls), with their ids to watch."""
    from workers.clients import fetch_live_calls, format_calls, http_url

    _client_env()
    settings = BridgeSettings()
    found = _run(fetch_live_calls(http_url(_bridge_base(settings, bridge_url)),
                                  _api_key(settings)))
    typer.echo(format_calls(found, prog()))


def _announce(call_id: str, wav: Path, url: str, layout: str) -> None:
    """Before the first frame: the call id and how to watch it."""
    typer.echo(f"call {call_id}: playing {wav.name} ({layout}) to {url}")
    typer.echo(f"  watch it:  {prog()} watch {call_id}")
    keys = sorted(BridgeSettings().api_key_set())
    if keys:
        from workers.clients import http_url

        base = http_url(_bridge_base(BridgeSettings(), ""))
        typer.echo(f"  web view:  {base}/#key={keys[0]}&call={call_id}")


async def _play(what: str, url: str, coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a simulator; connection failures become one line."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    from workers.clients import closed, unreachable

    try:
        return await coroutine
    except InvalidStatus as exc:
        raise UsageError(f"the {what} refused the connection: HTTP "
                         f"{exc.response.status_code}") from None
    except ConnectionClosed as exc:
        raise closed(exc, what) from None
    except OSError as exc:
        raise unreachable(what, url, exc) from None


@simulate_app.command("jambonz")
def simulate_jambonz(
    wav: StereoWav,
    url: Annotated[str, typer.Option(help="Ingest URL (default: local /jambonz).")] = "",
    rate: Annotated[int | None, typer.Option(help="sampleRate to send (default: the WAV's, "
                                             "or the next jambonz rate above it).")] = None,
    mix: Annotated[str | None, typer.Option(help="mono | mixed | stereo (default: stereo for "
                                            "a stereo WAV, mono for a mono one)")] = None,
    call_sid: Annotated[str | None, typer.Option(help="callSid (default: a UUID).")] = None,
    dtmf: Dtmf = None,
    fast: Fast = False,
) -> None:
    """Connect to /jambonz as jambonz would and play WAV (20 ms frames, real time)."""
    from workers.clients import describe_layout, jambonz_layout
    from workers.simulate.jambonz import simulate_jambonz as run

    _client_env()
    send_rate, send_mix = jambonz_layout(wav, rate, mix)
    presses = _presses(dtmf)
    target = _ingest_url(url, "/jambonz")
    call_sid = call_sid or str(uuid.uuid4())
    _announce(call_sid, wav, target, describe_layout(send_rate, 2 if send_mix == "stereo" else 1))
    call = _run(_play("ingest", target, run(
        # jambonz_layout checked the mix; it returns it as str, run() takes the Literal.
        target, wav, rate=send_rate, mix=send_mix,  # type: ignore[arg-type]  # see above
        call_sid=call_sid, dtmf=presses, realtime=not fast)))
    typer.echo(f"call {call.call_sid}: sent {call.samples_sent} samples x {call.channels} "
               f"channels at {call.rate} Hz")


def _ingest_url(url: str, path: str) -> str:
    base = os.environ.get("CALLSCRIBE_INGEST_URL") \
        or f"ws://127.0.0.1:{IngestSettings().ingest_port}"
    return url or f"{base.rstrip('/')}{path}"


def _presses(dtmf: list[str] | None) -> list[tuple[float, str]]:
    presses = []
    for press in dtmf or []:
        at, sep, digit = press.partition(":")
        try:
            presses.append((float(at), digit))
        except ValueError:
            sep = ""
        if not sep or not digit:
            raise UsageError(f"--dtmf {press!r}; expected SECONDS:DIGIT, e.g. 2.5:1")
    return presses


@simulate_app.command("plivo")
def simulate_plivo(
    wav: StereoWav,
    url: Annotated[str, typer.Option(help="Ingest URL (default: local /plivo).")] = "",
    tracks: Tracks = None,
    content_type: Annotated[str | None, typer.Option(
        help="audio/x-l16;rate=8000|16000|24000 or audio/x-mulaw;rate=8000 (default: L16 at "
             "the WAV's rate, or the next above it)")] = None,
    call_id: Annotated[str | None, typer.Option(help="start.callId (default: a UUID).")] = None,
    extra_headers: Annotated[str | None, typer.Option(help="extra_headers, as sent.")] = None,
    dtmf: Dtmf = None,
    fast: Fast = False,
) -> None:
    """Connect to /plivo as Plivo Audio Streams would and play WAV (20 ms media, real time);
    signs the upgrade when CALLSCRIBE_PLIVO_AUTH_TOKEN is set."""
    from workers.clients import default_tracks, plivo_content_type
    from workers.simulate.plivo import simulate_plivo as run

    _client_env()
    settings = IngestSettings()
    send_tracks = default_tracks(wav, tracks)
    send_type = plivo_content_type(wav, content_type)
    presses = _presses(dtmf)
    target = _ingest_url(url, "/plivo")
    call_id = call_id or str(uuid.uuid4())
    _announce(call_id, wav, target, f"{send_type}, tracks {send_tracks}")
    call = _run(_play("ingest", target, run(
        target, wav, tracks=send_tracks, content_type=send_type, call_id=call_id,
        extra_headers=extra_headers, dtmf=presses, auth_token=settings.plivo_auth_token,
        realtime=not fast)))
    typer.echo(f"call {call.call_id}: sent {call.samples_sent} samples at {call.rate} Hz; "
               f"closed {call.close_code}; {len(call.received)} messages back")


@simulate_app.command("twilio")
def simulate_twilio(
    wav: StereoWav,
    url: Annotated[str, typer.Option(help="Ingest URL (default: local /twilio).")] = "",
    tracks: Tracks = None,
    call_sid: Annotated[str | None, typer.Option(help="start.callSid.")] = None,
    parameter: Annotated[list[str] | None, typer.Option(help="NAME=VALUE customParameter, "
                                                             "repeatable.")] = None,
    dtmf: Dtmf = None,
    fast: Fast = False,
) -> None:
    """Connect to /twilio as Twilio Media Streams would and play WAV (20 ms μ-law, real
    time); signs the upgrade when CALLSCRIBE_TWILIO_AUTH_TOKEN is set."""
    from workers.clients import default_tracks
    from workers.simulate.twilio import simulate_twilio as run

    _client_env()
    settings = IngestSettings()
    send_tracks = default_tracks(wav, tracks)
    custom = dict(p.split("=", 1) for p in parameter or [] if "=" in p)
    presses = _presses(dtmf)
    target = _ingest_url(url, "/twilio")
    call_sid = call_sid or "CA" + uuid.uuid4().hex
    _announce(call_sid, wav, target, f"μ-law 8000 Hz, tracks {send_tracks}")
    call = _run(_play("ingest", target, run(
        target, wav, tracks=send_tracks, call_sid=call_sid, custom_parameters=custom,
        dtmf=presses, auth_token=settings.twilio_auth_token, realtime=not fast)))
    typer.echo(f"call {call.call_id}: sent {call.samples_sent} samples at 8000 Hz; "
               f"closed {call.close_code}; {len(call.received)} messages back")


simulate_app.command("audiohook")(simulate_audiohook_command)
simulate_app.command("vonage")(simulate_vonage_command)
simulate_app.command("telnyx")(simulate_telnyx_command)


@simulate_app.command("bland")
def simulate_bland(
    wav: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="WAV of the call.")],
    call_id: Annotated[str, typer.Option(help="The call's id.")] = "bland-demo-call",
    port: Annotated[int, typer.Option(help="Port of the local Bland API.")] = 8089,
    subscribe: Annotated[bool, typer.Option(help="Also POST /v1/subscriptions to the local "
                                                 "ingest API.")] = True,
) -> None:
    """Serve a Bland-compatible live-listen API for one call playing WAV (set the ingest's
    CALLSCRIBE_BLAND_API_URL to http://127.0.0.1:PORT and CALLSCRIBE_BLAND_API_KEY alike)."""
    from workers.clients import wav_format
    from workers.simulate.bland import BlandListenServer

    _client_env()
    wav_format(wav)
    settings = IngestSettings()
    key = settings.bland_api_key or "bland-local-key"

    async def run() -> None:
        server = BlandListenServer(api_key=key)
        call = server.add_call(call_id, wav)
        base = await server.start(port=port)
        typer.echo(f"Bland listen API on {base} (key {key!r}); call {call_id}")
        if subscribe:
            await _subscribe(settings, call_id)
        await call.done.wait()
        typer.echo(f"call {call_id} ended after {call.cursor // 2} samples")
        await server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


async def _subscribe(settings: IngestSettings, call_id: str) -> None:
    import aiohttp

    keys = sorted(settings.api_key_set())
    base = os.environ.get("CALLSCRIBE_INGEST_API_URL") \
        or f"http://127.0.0.1:{settings.ingest_api_port}"
    url = f"{base.rstrip('/')}/v1/subscriptions"
    headers = {"Authorization": f"Bearer {keys[0]}"} if keys else {}
    async with aiohttp.ClientSession() as http, http.post(
            url, json={"provider": "bland", "call_id": call_id}, headers=headers) as response:
        typer.echo(f"POST {url} → {response.status} {await response.text()}")


@app.command()
def up(
    demo: Annotated[bool, typer.Option(help="Play the bundled sample call and show it.")] = False,
    exit_after_demo: Annotated[bool, typer.Option(help="Stop once the demo call ends.")] = False,
) -> None:
    """Run everything: broker (unless CALLSCRIBE_KAFKA_BOOTSTRAP), ingest, transcriber, assist,
    bridge. Writes .callscribe/env (API key, token secret, URLs) for token, watch, calls and
    simulate."""
    from workers.local_stack import LocalStack

    os.environ.setdefault("CALLSCRIBE_LOG_FORMAT", "text")  # a person reads this command's
    logs.configure("up")
    env = dict(os.environ)
    env.setdefault("CALLSCRIBE_API_KEYS", "cs_" + secrets.token_urlsafe(24))
    env.setdefault("CALLSCRIBE_TOKEN_SECRET", secrets.token_urlsafe(32))
    if "CALLSCRIBE_INGEST_ALLOW_ANONYMOUS" not in env:  # LocalStack sets it: say so
        typer.echo("callscribe up: CALLSCRIBE_INGEST_ALLOW_ANONYMOUS=true (provider paths "
                   "without credentials accept anyone, for the simulators; never expose "
                   "this stack)")
    stack = LocalStack(env)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        stack.start()
        stack.print_summary(localenv.write(stack.client_env()))
        if demo:
            asyncio.run(stack.run_demo())
        if not (demo and exit_after_demo):
            typer.echo("Running. Ctrl-C stops everything.")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        typer.echo("", err=True)  # past the ^C the terminal echoed
    finally:
        stack.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """The ``callscribe`` entry point: a :class:`UsageError` (or any failure, without
    ``--debug``) is one line on stderr and a non-zero exit, never a traceback."""
    try:
        app(prog_name="callscribe")
    except KeyboardInterrupt:
        sys.exit(130)
    except UsageError as exc:
        if _debug:
            raise
        typer.echo(f"{_command_name()}: {exc}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # the last resort: one line instead of a traceback
        if _debug:
            raise
        typer.echo(f"{_command_name()}: {type(exc).__name__}: {exc} (run again with --debug "
                   "for the traceback)", err=True)
        sys.exit(1)


def _command_name() -> str:
    """``callscribe watch``, ``callscribe simulate jambonz``: the words before the options."""
    words = ["callscribe"]
    for arg in sys.argv[1:]:
        if arg.startswith("-"):
            continue
        words.append(arg)
        if arg != "simulate":
            break
    return " ".join(words)


if __name__ == "__main__":
    main()
