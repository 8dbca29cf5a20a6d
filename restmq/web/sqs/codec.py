"""SQS's two wire protocols: AWS JSON 1.0 and the query protocol (form fields in,
XML out). Both are turned into, and rendered from, the JSON protocol's shapes,
so each action is written once (actions.py).
"""

from __future__ import annotations

import base64
from typing import Any, Dict, List, Tuple
from xml.sax.saxutils import escape

import orjson

from restmq.web.sqs.errors import SqsError

__all__ = ["JSON_CONTENT_TYPE", "XML_NAMESPACE", "parse_json", "parse_query", "render_json",
           "render_json_error", "render_xml", "render_xml_error"]

JSON_CONTENT_TYPE = "application/x-amz-json-1.0"
XML_NAMESPACE = "http://queue.amazonaws.com/doc/2012-11-05/"
ERROR_NAMESPACE = "com.amazonaws.sqs#"

# actions whose XML answer has an <ActionResult> element
_RESULT_ACTIONS = {
    "CreateQueue", "GetQueueUrl", "GetQueueAttributes", "ListQueues", "ListQueueTags",
    "ListDeadLetterSourceQueues", "ReceiveMessage", "SendMessage", "SendMessageBatch",
    "DeleteMessageBatch", "ChangeMessageVisibilityBatch", "StartMessageMoveTask",
    "CancelMessageMoveTask", "ListMessageMoveTasks",
}


def parse_json(body: bytes) -> Dict[str, Any]:
    """The input of an AWS JSON 1.0 request. :raises SqsError: unless a JSON object."""
    if not body:
        return {}
    try:
        params = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise SqsError("InvalidParameterValue", "The request body is not valid JSON.") from None
    if not isinstance(params, dict):
        raise SqsError("InvalidParameterValue", "The request body must be a JSON object.")
    return params


# query protocol input

def _tree(fields: Dict[str, str]) -> Dict[str, Any]:
    """{"A.1.B": v} -> {"A": {"1": {"B": v}}}. :raises SqsError: on clashes."""
    root: Dict[str, Any] = {}
    for name, value in fields.items():
        parts = name.split(".")
        node = root
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SqsError("MalformedQueryString", "Parameter %s is malformed." % name[:200])
            node = child
        if isinstance(node.get(parts[-1]), dict):
            raise SqsError("MalformedQueryString", "Parameter %s is malformed." % name[:200])
        node[parts[-1]] = value
    return root


def _members(node: Any, name: str) -> List[Any]:
    """The members of a numbered list ("X.1", "X.2", ...) in their order."""
    if not isinstance(node, dict) or not all(key.isdigit() for key in node):
        raise SqsError("MalformedQueryString", "Parameter %s must be numbered (%s.1, %s.2, ...)."
                       % (name, name, name))
    return [node[key] for key in sorted(node, key=int)]


def _scalar(node: Any, name: str) -> str:
    if isinstance(node, dict):
        raise SqsError("MalformedQueryString", "Parameter %s is malformed." % name)
    return node


def _pairs(node: Any, name: str, key: str, value: str) -> Dict[str, Any]:
    out = {}
    for member in _members(node, name):
        if not isinstance(member, dict) or key not in member:
            raise SqsError("MalformedQueryString", "Each %s needs a %s." % (name, key))
        out[_scalar(member[key], name)] = member.get(value, "")
    return out


def _attribute_value(node: Any, name: str) -> Dict[str, Any]:
    if not isinstance(node, dict):
        raise SqsError("MalformedQueryString", "Parameter %s.Value is malformed." % name)
    out: Dict[str, Any] = {}
    for field in ("StringValue", "BinaryValue", "DataType"):
        if field in node:
            out[field] = _scalar(node[field], name)
    for field in ("StringListValue", "BinaryListValue"):
        if field in node:
            out[field + "s"] = [_scalar(v, name) for v in _members(node[field], field)]
    return out


def _message_attributes(node: Any, name: str) -> Dict[str, Any]:
    return {key: _attribute_value(value, name) for key, value in _pairs(node, name, "Name", "Value").items()}


def _convert(tree: Dict[str, Any], action: str) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for name, node in tree.items():
        if name == "Attribute":
            out["Attributes"] = {k: _scalar(v, name) for k, v in _pairs(node, name, "Name", "Value").items()}
        elif name in ("AttributeName", "MessageAttributeName", "MessageSystemAttributeName", "TagKey",
                      "AWSAccountId", "ActionName"):
            out[name + "s"] = [_scalar(member, name) for member in _members(node, name)]
        elif name == "MessageAttribute":
            out["MessageAttributes"] = _message_attributes(node, name)
        elif name == "MessageSystemAttribute":
            out["MessageSystemAttributes"] = _message_attributes(node, name)
        elif name in ("Tag", "Tags"):
            out["Tags" if action == "TagQueue" else "tags"] = {
                k: _scalar(v, name) for k, v in _pairs(node, name, "Key", "Value").items()}
        elif name.endswith("BatchRequestEntry"):
            out["Entries"] = [_convert(entry, action) if isinstance(entry, dict) else _scalar(entry, name)
                              for entry in _members(node, name)]
        else:
            out[name] = _scalar(node, name)
    return out


def parse_query(fields: Dict[str, str]) -> Tuple[str, Dict[str, Any]]:
    """(action, input in the JSON protocol's shape) of a query-protocol request."""
    action = fields.get("Action", "")
    tree = _tree({name: value for name, value in fields.items()
                  if name not in ("Action", "Version") and not name.startswith("X-Amz-")})
    return action, _convert(tree, action)


# output

def _blob(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    raise TypeError("cannot render %r" % type(value))


def render_json(result: Dict[str, Any]) -> bytes:
    """An AWS JSON 1.0 answer; blobs (Binary attribute values) as base64."""
    return orjson.dumps(result, default=_blob)


def render_json_error(error: SqsError) -> Tuple[bytes, Dict[str, str]]:
    """The body and headers of an AWS JSON 1.0 error answer."""
    body = orjson.dumps({"__type": ERROR_NAMESPACE + error.name, "message": error.message})
    return body, {"x-amzn-query-error": "%s;%s" % (error.code, "Sender" if error.sender else "Receiver")}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, (bytes, bytearray)):
        value = base64.b64encode(value).decode("ascii")
    # a CR would come back as LF from any XML parser (end-of-line handling)
    return escape(str(value), {"\r": "&#xD;", '"': "&quot;"})


def _element(name: str, value: Any, action: str) -> str:
    if isinstance(value, dict):
        return "<%s>%s</%s>" % (name, _fields(value, action), name)
    return "<%s>%s</%s>" % (name, _text(value), name)


# list or map field of an answer -> how each of its members is written
def _map_members(field: str, value: Dict[str, Any], action: str) -> str:
    if field == "Attributes":
        return "".join("<Attribute><Name>%s</Name><Value>%s</Value></Attribute>" % (_text(k), _text(v))
                       for k, v in value.items())
    if field in ("MessageAttributes", "MessageSystemAttributes"):
        tag = "MessageAttribute"
        return "".join("<%s><Name>%s</Name><Value>%s</Value></%s>" % (tag, _text(k), _fields(v, action), tag)
                       for k, v in value.items())
    if field == "Tags":
        return "".join("<Tag><Key>%s</Key><Value>%s</Value></Tag>" % (_text(k), _text(v))
                       for k, v in value.items())
    return _element(field, value, action)


def _list_member_name(field: str, action: str) -> str:
    if field in ("QueueUrls", "queueUrls"):
        return "QueueUrl"
    if field == "Messages":
        return "Message"
    if field == "Successful":
        return action + "ResultEntry"
    if field == "Failed":
        return "BatchResultErrorEntry"
    if field == "Results":
        return "ListMessageMoveTasksResultEntry"
    if field == "StringListValues":
        return "StringListValue"
    if field == "BinaryListValues":
        return "BinaryListValue"
    return field


def _fields(result: Dict[str, Any], action: str) -> str:
    parts: List[str] = []
    for field, value in result.items():
        if value is None:
            continue
        if isinstance(value, list):
            member = _list_member_name(field, action)
            parts.extend(_element(member, item, action) for item in value)
        elif isinstance(value, dict) and field in ("Attributes", "MessageAttributes",
                                                   "MessageSystemAttributes", "Tags"):
            parts.append(_map_members(field, value, action))
        else:
            parts.append(_element(field, value, action))
    return "".join(parts)


def render_xml(action: str, result: Dict[str, Any], request_id: str) -> bytes:
    """The query protocol's XML answer of ``action``."""
    inner = ""
    if action in _RESULT_ACTIONS:
        inner = "<%sResult>%s</%sResult>" % (action, _fields(result, action), action)
    return ('<?xml version="1.0"?><%sResponse xmlns="%s">%s<ResponseMetadata><RequestId>%s</RequestId>'
            '</ResponseMetadata></%sResponse>' % (action, XML_NAMESPACE, inner, request_id, action)
            ).encode("utf-8")


def render_xml_error(error: SqsError, request_id: str) -> bytes:
    return ('<?xml version="1.0"?><ErrorResponse xmlns="%s"><Error><Type>%s</Type><Code>%s</Code>'
            '<Message>%s</Message><Detail/></Error><RequestId>%s</RequestId></ErrorResponse>'
            % (XML_NAMESPACE, "Sender" if error.sender else "Receiver", _text(error.code),
               _text(error.message), request_id)).encode("utf-8")
