"""The call-control port's REST plans per provider (pure: rendered, never sent)."""

from __future__ import annotations

import base64
import time

import jwt
import pytest

from tests.ingest.vonage_keys import VONAGE_APPLICATION_ID, key_pair
from workers.ingest.control import (
    HangUp,
    ProviderApis,
    RestRequest,
    Transfer,
    check_response,
    plan_rest,
)
from workers.ingest.dialects.events import CallStart
from workers.ingest.errors import ControlNotConfigured, ControlUnsupported, ProviderRefused
from workers.ingest.providers.vonage import ApplicationJwt

APIS = ProviderApis(
    jambonz_api_url="https://jambonz.example/api/", jambonz_api_key="jk",
    plivo_api_url="https://plivo.example", plivo_auth_token="pt",
    twilio_api_url="https://twilio.example", twilio_auth_token="tt",
    bland_api_url="https://bland.example", bland_api_key="bk",
    telnyx_api_url="https://telnyx.example/", telnyx_api_key="tk",
    transfer_hook_url="https://app.example/dial?to={target}&call={call_id}")


def start(**metadata: object) -> CallStart:
    return CallStart("c-1", "", "", "", 8000, "mono", 1, ("other",), dict(metadata))


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_jambonz() -> None:
    meta = start(accountSid="acct-1", callSid="c-1")
    hang = plan_rest(HangUp(), provider="jambonz", call_id="c-1", start=meta, apis=APIS)
    assert (hang.method, hang.url) == ("PUT", "https://jambonz.example/api/v1/Accounts/acct-1/"
                                              "Calls/c-1")
    assert hang.headers == {"Authorization": "Bearer jk"}
    assert hang.json == {"call_status": "completed"}
    move = plan_rest(Transfer("+15550001111"), provider="jambonz", call_id="c-1", start=meta,
                     apis=APIS)
    assert move.json == {"call_hook": {
        "url": "https://app.example/dial?to=%2B15550001111&call=c-1", "method": "POST"}}


def test_plivo() -> None:
    meta = start(accountId="MA123", callId="u-1")
    hang = plan_rest(HangUp(), provider="plivo", call_id="u-1", start=meta, apis=APIS)
    assert (hang.method, hang.url) == ("DELETE", "https://plivo.example/v1/Account/MA123/Call/u-1/")
    assert hang.headers == {"Authorization": basic("MA123", "pt")}
    move = plan_rest(Transfer("+1555"), provider="plivo", call_id="u-1", start=meta, apis=APIS)
    assert move.method == "POST" and move.json is not None
    assert move.json["legs"] == "aleg" and move.json["aleg_url"].startswith("https://app.example")


def test_twilio() -> None:
    meta = start(accountSid="AC1", callSid="CA1")
    hang = plan_rest(HangUp(), provider="twilio", call_id="CA1", start=meta, apis=APIS)
    assert (hang.method, hang.url) == (
        "POST", "https://twilio.example/2010-04-01/Accounts/AC1/Calls/CA1.json")
    assert hang.form == {"Status": "completed"}
    assert hang.headers == {"Authorization": basic("AC1", "tt")}
    move = plan_rest(Transfer("+1 <555>"), provider="twilio", call_id="CA1", start=meta,
                     apis=APIS)
    assert move.form == {"Twiml": "<Response><Dial>+1 &lt;555&gt;</Dial></Response>"}
    sip = plan_rest(Transfer("sip:agent@example.com"), provider="twilio", call_id="CA1",
                    start=meta, apis=APIS)
    assert sip.form == {"Twiml": "<Response><Dial><Sip>sip:agent@example.com</Sip></Dial>"
                                 "</Response>"}


def test_bland() -> None:
    meta = start(callId="b 1")
    hang = plan_rest(HangUp(), provider="bland", call_id="b 1", start=meta, apis=APIS)
    assert (hang.method, hang.url) == ("POST", "https://bland.example/v1/calls/b%201/stop")
    assert hang.headers == {"authorization": "bk"}
    move = plan_rest(Transfer("+15550001111"), provider="bland", call_id="b 1", start=meta,
                     apis=APIS)
    assert move.url == "https://bland.example/v1/calls/active/transfer"
    assert move.json == {"call_id": "b 1", "transfer_number": "+15550001111"}


def test_telnyx() -> None:
    meta = start(call_control_id="v3:a/b")
    hang = plan_rest(HangUp(), provider="telnyx", call_id="ours", start=meta, apis=APIS)
    assert (hang.method, hang.url) == ("POST",
                                       "https://telnyx.example/v2/calls/v3:a%2Fb/actions/hangup")
    assert hang.headers == {"Authorization": "Bearer tk"} and hang.json == {}
    move = plan_rest(Transfer("sip:agent@example.com"), provider="telnyx", call_id="ours",
                     start=meta, apis=APIS)
    assert move.url.endswith("/v2/calls/v3:a%2Fb/actions/transfer")
    assert move.json == {"to": "sip:agent@example.com"}
    with pytest.raises(ControlNotConfigured, match="TELNYX_API_KEY"):
        plan_rest(HangUp(), provider="telnyx", call_id="c", start=meta, apis=ProviderApis())
    with pytest.raises(ControlNotConfigured, match="call_control_id"):
        plan_rest(HangUp(), provider="telnyx", call_id="telnyx-1234", start=start(), apis=APIS)
    assert "tk" not in repr(hang)


def vonage_apis(**changes: object) -> ProviderApis:
    values: dict[str, object] = dict(
        vonage_api_url="https://vonage.example/", vonage_application_id=VONAGE_APPLICATION_ID,
        vonage_private_key=key_pair()[0])
    values.update(changes)
    return ProviderApis(**values)  # type: ignore[arg-type]  # mixed values: the test's own


def test_vonage() -> None:
    meta = start(uuid="63f61863-4a51", conversation_uuid="CON-1")
    apis = vonage_apis()
    hang = plan_rest(HangUp(), provider="vonage", call_id="ours", start=meta, apis=apis)
    assert (hang.method, hang.url) == ("PUT", "https://vonage.example/v1/calls/63f61863-4a51")
    assert hang.json == {"action": "hangup"} and hang.headers == {}
    assert isinstance(hang.signer, ApplicationJwt)
    assert hang.signer.application_id == VONAGE_APPLICATION_ID
    move = plan_rest(Transfer("+15550001111"), provider="vonage", call_id="ours", start=meta,
                     apis=apis)
    assert move.json == {"action": "transfer", "destination": {"type": "ncco", "ncco": [
        {"action": "connect", "endpoint": [{"type": "phone", "number": "15550001111"}]}]}}
    sip = plan_rest(Transfer("sip:agent@example.com"), provider="vonage", call_id="ours",
                    start=meta, apis=apis)
    assert sip.json is not None
    assert sip.json["destination"]["ncco"][0]["endpoint"] == [
        {"type": "sip", "uri": "sip:agent@example.com"}]
    hooked = plan_rest(Transfer("+1555"), provider="vonage", call_id="c 1", start=meta,
                       apis=vonage_apis(transfer_hook_url="https://app.example/ncco?to={target}"
                                                          "&call={call_id}"))
    assert hooked.json == {"action": "transfer", "destination": {
        "type": "ncco", "url": ["https://app.example/ncco?to=%2B1555&call=c%201"]}}
    assert "PRIVATE" not in repr(hang) + repr(hang.signer) + repr(apis)


def test_vonage_needs_its_credentials_and_the_call_uuid() -> None:
    meta = start(uuid="u-1")
    with pytest.raises(ControlNotConfigured, match="VONAGE_APPLICATION_ID"):
        plan_rest(HangUp(), provider="vonage", call_id="c", start=meta, apis=ProviderApis())
    with pytest.raises(ControlNotConfigured, match="VONAGE_PRIVATE_KEY"):
        plan_rest(HangUp(), provider="vonage", call_id="c", start=meta,
                  apis=vonage_apis(vonage_private_key=None))
    # A conversation uuid is no call leg, and a generated call id is not Vonage's.
    with pytest.raises(ControlNotConfigured, match="uuid"):
        plan_rest(HangUp(), provider="vonage", call_id="vonage-1234",
                  start=start(conversation_uuid="CON-1"), apis=vonage_apis())


def test_the_vonage_application_jwt_verifies_with_the_public_key() -> None:
    private, public = key_pair()
    signer = ApplicationJwt(VONAGE_APPLICATION_ID, private)
    now = time.time()
    tokens = [signer.headers(now=now, nonce=nonce)["Authorization"].removeprefix("Bearer ")
              for nonce in ("n-1", "n-2")]
    assert jwt.get_unverified_header(tokens[0])["alg"] == "RS256"
    claims = [jwt.decode(t, public, algorithms=["RS256"]) for t in tokens]
    assert claims[0]["application_id"] == VONAGE_APPLICATION_ID
    assert claims[0]["iat"] == int(now) and now < claims[0]["exp"] <= now + 900
    assert [c["jti"] for c in claims] == ["n-1", "n-2"]
    other = ApplicationJwt(VONAGE_APPLICATION_ID, private, ttl_s=-1)  # already expired
    with pytest.raises(jwt.ExpiredSignatureError):
        jwt.decode(other.headers(now=now, nonce="n")["Authorization"][7:], public,
                   algorithms=["RS256"])


def test_a_problem_document_is_shown() -> None:
    """Vonage answers errors as RFC 7807 problem documents (title, detail)."""
    with pytest.raises(ProviderRefused) as refused:
        check_response(RestRequest("PUT", "https://x/v1/calls/u"), 400,
                       b'{"type": "https://developer.nexmo.com/api-errors#bad-request", '
                       b'"title": "Bad Request", "detail": "The call is not active"}',
                       gone_is_done=False)
    assert "400: Bad Request The call is not active" in str(refused.value)
    check_response(RestRequest("PUT", "https://x/v1/calls/u"), 404,
                   b'{"title": "Not Found"}', gone_is_done=True)


def test_an_error_code_the_request_names_means_already_over() -> None:
    ended = b'{"errors": [{"code": "90018", "title": "Call has already ended"}]}'
    request = RestRequest("POST", "https://x/v2/calls/c/actions/hangup", gone_codes=("90018",))
    check_response(request, 422, ended, gone_is_done=True)
    with pytest.raises(ProviderRefused) as refused:  # a transfer of an ended call fails
        check_response(request, 422, ended, gone_is_done=False)
    assert "90018 Call has already ended" in str(refused.value)
    with pytest.raises(ProviderRefused):  # not a code it names
        check_response(RestRequest("POST", "https://x"), 422, ended, gone_is_done=True)


def test_missing_configuration_is_reported_not_guessed() -> None:
    with pytest.raises(ControlNotConfigured, match="JAMBONZ_API_URL"):
        plan_rest(HangUp(), provider="jambonz", call_id="c",
                  start=start(accountSid="a", callSid="c"), apis=ProviderApis())
    with pytest.raises(ControlNotConfigured, match="accountSid"):
        plan_rest(HangUp(), provider="jambonz", call_id="c", start=start(callSid="c"),
                  apis=APIS)
    with pytest.raises(ControlNotConfigured, match="callSid"):  # a generated id: no REST
        plan_rest(HangUp(), provider="twilio", call_id="twilio-1234",
                  start=start(accountSid="AC"), apis=APIS)
    with pytest.raises(ControlNotConfigured, match="TRANSFER_HOOK_URL"):
        plan_rest(Transfer("+1"), provider="plivo", call_id="c",
                  start=start(accountId="MA", callId="c"), apis=ProviderApis(plivo_auth_token="t"))
    with pytest.raises(ControlNotConfigured, match="TWILIO_AUTH_TOKEN"):
        plan_rest(HangUp(), provider="twilio", call_id="c",
                  start=start(accountSid="AC", callSid="c"), apis=ProviderApis())
    with pytest.raises(ControlUnsupported):
        plan_rest(HangUp(), provider="genesys", call_id="c", start=start(), apis=APIS)
    assert "jk" not in repr(plan_rest(HangUp(), provider="jambonz", call_id="c",
                                      start=start(accountSid="a", callSid="c"), apis=APIS))


def test_responses() -> None:
    request = RestRequest("POST", "https://x/y?secret=1")
    check_response(request, 204, b"", gone_is_done=False)
    check_response(request, 200, b'{"status": "success"}', gone_is_done=False)
    check_response(request, 404, b"", gone_is_done=True)
    with pytest.raises(ProviderRefused) as bland_error:
        check_response(request, 200, b'{"status": "error", "message": "SID not found"}',
                       gone_is_done=False)
    assert "SID not found" in str(bland_error.value) and not bland_error.value.retriable
    assert "secret" not in str(bland_error.value)
    with pytest.raises(ProviderRefused) as busy:
        check_response(request, 503, b"<html>", gone_is_done=True)
    assert busy.value.retriable and busy.value.status == 503
    with pytest.raises(ProviderRefused) as limited:
        check_response(request, 429, b"", gone_is_done=False)
    assert limited.value.retriable
