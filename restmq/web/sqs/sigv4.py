"""AWS Signature Version 4, verified: the ``Authorization`` header form and the
presigned query form (``X-Amz-Signature``), as botocore and the other SDKs sign.

The expected signature is computed from the secret of the access key the
request names and compared in constant time. Pure functions of the request's
parts; the handler passes them in.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import time
from typing import List, Optional, Sequence, Tuple
from urllib.parse import quote, unquote

import attr

from restmq.acl import SqsKey, SqsKeys
from restmq.web.sqs.errors import SqsError

__all__ = ["SignedRequest", "verify", "signature", "signing_key", "access_key_of"]

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "sqs"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"


@attr.s(frozen=True, auto_attribs=True)
class SignedRequest:
    """The parts of an HTTP request that its signature covers."""

    method: str
    path: str  # as sent, percent-encoded
    query: str  # the raw query string, without "?"
    headers: Sequence[Tuple[str, str]]  # (name, value) as received, repeats included
    body: bytes


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str = SERVICE) -> bytes:
    key = _hmac(("AWS4" + secret).encode("utf-8"), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, "aws4_request")


def _remove_dot_segments(path: str) -> str:
    # RFC 3986 5.2.4, with consecutive slashes collapsed as AWS requires
    output: List[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if output:
                output.pop()
        elif segment and segment != ".":
            output.append(segment)
    first = "/" if path.startswith("/") else ""
    last = "/" if path.endswith("/") and output else ""
    return first + "/".join(output) + last


def _canonical_path(path: str) -> str:
    # as botocore signs: the path as sent, dot segments removed, then quoted once
    # more (so each percent of the request's own encoding is encoded again)
    return quote(_remove_dot_segments(path) if path else "/", safe="/~")


def _canonical_query(query: str, drop_signature: bool) -> str:
    pairs = []
    for item in query.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        name = unquote(name.replace("+", " "))
        if drop_signature and name == "X-Amz-Signature":
            continue
        pairs.append((quote(name, safe="-_.~"), quote(unquote(value.replace("+", " ")), safe="-_.~")))
    return "&".join("%s=%s" % pair for pair in sorted(pairs))


def _header_values(headers: Sequence[Tuple[str, str]], name: str) -> Optional[str]:
    values = [" ".join(value.split()) for key, value in headers if key.lower() == name]
    return ",".join(values) if values else None


def _query_params(query: str) -> dict:
    params = {}
    for item in query.split("&"):
        name, _, value = item.partition("=")
        params[unquote(name.replace("+", " "))] = unquote(value.replace("+", " "))
    return params


def signature(request: SignedRequest, secret: str, amz_date: str, scope: str,
              signed_headers: List[str], payload_hash: str, presigned: bool) -> str:
    """The hex signature of ``request`` by ``secret`` (what the client should have sent)."""
    canonical_headers = ""
    for name in signed_headers:
        value = _header_values(request.headers, name)
        canonical_headers += "%s:%s\n" % (name, value or "")
    canonical = "\n".join([request.method.upper(), _canonical_path(request.path),
                           _canonical_query(request.query, presigned), canonical_headers,
                           ";".join(signed_headers), payload_hash])
    to_sign = "\n".join([ALGORITHM, amz_date, scope,
                         hashlib.sha256(canonical.encode("utf-8")).hexdigest()])
    date, region, service = scope.split("/")[:3]
    return hmac.new(signing_key(secret, date, region, service), to_sign.encode("utf-8"),
                    hashlib.sha256).hexdigest()


def _parse_authorization(header: str) -> Tuple[str, List[str], str]:
    """(credential, signed headers, signature) of an Authorization header."""
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise SqsError("IncompleteSignature", "Unsupported AWS 'algorithm': '%s' (sign with "
                       "Signature Version 4, AWS4-HMAC-SHA256)." % algorithm[:50])
    fields = {}
    for part in rest.split(","):
        name, sep, value = part.strip().partition("=")
        if sep:
            fields[name] = value
    missing = [name for name in ("Credential", "SignedHeaders", "Signature") if not fields.get(name)]
    if missing:
        raise SqsError("IncompleteSignature", "Authorization header requires '%s' parameter."
                       % missing[0])
    return fields["Credential"], fields["SignedHeaders"].split(";"), fields["Signature"]


def _parse_amz_date(text: str) -> Optional[float]:
    try:
        return calendar.timegm(time.strptime(text, "%Y%m%dT%H%M%SZ"))
    except (ValueError, OverflowError):
        return None


def access_key_of(request: SignedRequest) -> Optional[str]:
    """The access key id a request names (header or presigned form), unverified."""
    header = _header_values(request.headers, "authorization")
    credential = None
    if header:
        for part in header.partition(" ")[2].split(","):
            name, _, value = part.strip().partition("=")
            if name == "Credential":
                credential = value
    elif "X-Amz-Credential" in request.query:
        credential = _query_params(request.query).get("X-Amz-Credential")
    return credential.split("/")[0] if credential else None


def verify(request: SignedRequest, keys: SqsKeys, now: float, max_age: float) -> SqsKey:
    """Check the request's SigV4 signature.

    :returns: the access key that signed it.
    :raises SqsError: MissingAuthenticationToken, IncompleteSignature,
        InvalidClientTokenId, SignatureDoesNotMatch or RequestExpired.
    """
    header = _header_values(request.headers, "authorization")
    presigned = header is None and "X-Amz-Signature=" in request.query
    if header is not None:
        credential, signed_headers, given = _parse_authorization(header)
        amz_date = _header_values(request.headers, "x-amz-date") or ""
        expires = max_age
    elif presigned:
        params = _query_params(request.query)
        if params.get("X-Amz-Algorithm") != ALGORITHM:
            raise SqsError("IncompleteSignature", "X-Amz-Algorithm must be %s." % ALGORITHM)
        credential = params.get("X-Amz-Credential", "")
        signed_headers = params.get("X-Amz-SignedHeaders", "").split(";")
        given = params.get("X-Amz-Signature", "")
        amz_date = params.get("X-Amz-Date", "")
        text = params.get("X-Amz-Expires", "")
        # whole seconds, 1 to 7 days (SigV4's bound); "nan" or "inf" would never expire
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 7 * 86400:
            raise SqsError("IncompleteSignature", "X-Amz-Expires must be 1-604800 seconds.")
        expires = float(text)
    else:
        raise SqsError("MissingAuthenticationToken", "Request is missing Authentication Token")

    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not parts[0]:
        raise SqsError("IncompleteSignature", "Credential must be <access key>/<date>/<region>/"
                       "<service>/aws4_request.")
    key = keys.get(parts[0])
    if key is None:
        raise SqsError("InvalidClientTokenId", "The security token included in the request is invalid.")
    if parts[3] != SERVICE:
        raise SqsError("SignatureDoesNotMatch", "Credential should be scoped to correct service: 'sqs'.")
    signed_at = _parse_amz_date(amz_date)
    if signed_at is None or parts[1] != amz_date[:8]:
        raise SqsError("IncompleteSignature", "X-Amz-Date must be the signing time "
                       "(YYYYMMDDTHHMMSSZ) of the credential's date.")
    if "host" not in signed_headers:
        raise SqsError("SignatureDoesNotMatch", "The Host header must be signed.")
    if presigned:
        if now > signed_at + expires or signed_at > now + max_age:
            raise SqsError("RequestExpired", "Request has expired.")
    elif abs(now - signed_at) > max_age:
        raise SqsError("RequestExpired", "Signature expired: %s is now outside the allowed %d s "
                       "of the server's time." % (amz_date, max_age))
    payload_hash = _header_values(request.headers, "x-amz-content-sha256")
    body_hash = hashlib.sha256(request.body).hexdigest()
    if payload_hash is None:
        payload_hash = body_hash
    elif payload_hash != UNSIGNED_PAYLOAD and not hmac.compare_digest(payload_hash, body_hash):
        raise SqsError("SignatureDoesNotMatch", "The body does not match X-Amz-Content-SHA256.")
    expected = signature(request, key.secret, amz_date, "/".join(parts[1:]), signed_headers,
                         payload_hash, presigned)
    if not hmac.compare_digest(expected.encode("ascii"), given.encode("ascii", "replace")):
        raise SqsError("SignatureDoesNotMatch", "The request signature we calculated does not match "
                       "the signature you provided. Check your AWS Secret Access Key and signing "
                       "method.")
    return key
