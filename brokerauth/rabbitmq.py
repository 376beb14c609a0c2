"""RabbitMQ's HTTP auth contract (rabbitmq_auth_backend_http), served from the same rules as
the go-auth endpoints (brokerauth/views.py): Account.objects.authenticate for logins,
policy.explain_acl for topics, AuthEvent.objects.record for the audit, which says which
broker asked. A wire adapter: nothing is decided here that Mosquitto's endpoints would not,
beyond RabbitMQ's own vhost and the queues and exchange of a client's MQTT session.

What RabbitMQ 3.10.8's MQTT plugin sends, form-encoded, with `auth_http.http_method = post`
(the default GET would put the password in the URL), as observed on the wire:

- user, at CONNECT: username, password, vhost, client_id;
- vhost, after a login: username, vhost, ip, tags, client_id;
- resource, for the session's queues and exchange: username, vhost, resource (queue,
  exchange), name, permission (configure, write, read), tags, client_id;
- topic, for each topic new to a connection: username, vhost, resource=topic,
  name=amq.topic, permission (write: publish, read: subscribe), tags, routing_key,
  variable_map.client_id, variable_map.username, variable_map.vhost.

An answer is a 200 whose body is exactly `allow` or `deny` (`allow <tags>` for users). 3.10
knows no `deny <reason>` on the vhost, resource and topic paths: it crashes the connection,
so the reason goes to the log and the audit only. Any other status is an error to RabbitMQ,
which refuses the client and logs the error: the fence (broker_endpoint) answers 403,
malformed requests 400, database trouble 503, as for Mosquitto.

Topics arrive as AMQP routing keys: MQTT `/` became `.` and `+` became `*` (`#` stays), so a
`.` inside an MQTT level is a level separator for RabbitMQ (devices/a.b is delivered as
devices/a/b). The key is read back to the topic RabbitMQ delivers and decided in the
`topics.RABBITMQ` dialect. No call comes per delivery: a subscription must also be allowed
to receive every topic it can match.

One AMQP client logs in too: the monitor (MONITOR_USERNAME, no client id), with RabbitMQ's
`monitoring` tag for the management API's connection list. It may declare and read its own
queues (MONITOR_QUEUE_PREFIX), bind them to the MQTT exchange under its account's subscribe
rules, and to the event exchange for connection events; devices can do none of that.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from brokerauth import acl, topics, wire
from brokerauth.guards import broker_endpoint
from brokerauth.models import Account, AuthEvent, Login
from brokerauth.policy import policy

BROKER = AuthEvent.Broker.RABBITMQ
# The MQTT plugin publishes to and binds its queues on this exchange (mqtt.exchange).
EXCHANGE = "amq.topic"
# connection.created / connection.closed (rabbitmq_event_exchange), read by the monitor.
EVENT_EXCHANGE = "amq.rabbitmq.event"
MONITOR_QUEUE_PREFIX = "mqtt-service."
MONITOR_TAGS = "monitoring"
PERMISSIONS = ("configure", "write", "read")
TOPIC_ACCESS = {"write": acl.Access.PUBLISH, "read": acl.Access.SUBSCRIBE}


def mqtt_topic(routing_key: str) -> str:
    """The MQTT topic or filter RabbitMQ made a routing key of (its own reverse mapping)."""
    return routing_key.replace(".", "/").replace("*", "+")


def subscription_queues(clientid: str) -> tuple[str, str]:
    """The queues the MQTT plugin declares for a client's QoS 0 and QoS 1 subscriptions."""
    base = f"mqtt-subscription-{clientid}qos"
    return base + "0", base + "1"


def vhost_decision(subject: acl.Subject | None, vhost: str) -> acl.Decision:
    if subject is None:
        return acl.Decision(False, "unknown account")
    if not subject.active:
        return acl.Decision(False, "account disabled")
    if vhost != settings.RABBITMQ_VHOST:
        return acl.Decision(False, f"vhost {vhost!r} is not the MQTT vhost")
    return acl.Decision(True, "the MQTT vhost")


def is_monitor(username: str, clientid: str) -> bool:
    """The monitor's AMQP connection: its account, without an MQTT client id."""
    return not clientid and username == settings.MONITOR_USERNAME


def monitor_resource_decision(kind: str, name: str, permission: str) -> acl.Decision:
    if kind == "queue" and name.startswith(MONITOR_QUEUE_PREFIX):
        return acl.Decision(True, "the monitor's own queue")
    if kind == "exchange" and name in (EXCHANGE, EVENT_EXCHANGE) and permission == "read":
        return acl.Decision(True, f"the monitor binds to {name}")
    return acl.Decision(False, f"{permission} on {kind} {name!r}: not the monitor's")


def resource_decision(
    subject: acl.Subject | None, clientid: str, vhost: str, kind: str, name: str, permission: str
) -> acl.Decision:
    """The queues and the exchange of the client's own MQTT session, nothing else (or the
    monitor's queues and bindings)."""
    decision = vhost_decision(subject, vhost)
    if not decision.allowed:
        return decision
    if subject is not None and is_monitor(subject.username, clientid):
        return monitor_resource_decision(kind, name, permission)
    if kind == "queue" and clientid and name in subscription_queues(clientid):
        return acl.Decision(True, "the client's own subscription queue")
    if kind == "exchange" and name == EXCHANGE and permission in ("read", "write"):
        return acl.Decision(True, f"{permission} on the MQTT exchange")
    return acl.Decision(False, f"{permission} on {kind} {name!r}: not MQTT client {clientid!r}'s")


def _fields(request: HttpRequest, *names: str, optional: tuple[str, ...] = ()) -> dict[str, str]:
    if request.method != "POST":
        raise wire.WireError("RabbitMQ must POST: set auth_http.http_method = post")
    data = wire.fields(request, *names)
    for name in optional:
        data[name] = wire.fields(request, name)[name] if name in request.POST else ""
    return data


def _answer(verdict: Login | acl.Decision, tags: str = "") -> HttpResponse:
    answer = f"allow {tags}".strip() if verdict.allowed else "deny"
    return HttpResponse(answer, content_type="text/plain")


@broker_endpoint
def user(request: HttpRequest) -> HttpResponse:
    data = _fields(request, "username", "password", optional=("client_id",))
    username, clientid = data["username"], data["client_id"]
    monitor = is_monitor(username, clientid)
    if clientid or monitor:
        login = Account.objects.authenticate(username, data["password"], clientid)
    else:
        # AMQP clients and the management UI log in without one: not devices.
        login = Login(False, "no MQTT client id: only MQTT clients and the monitor log in here")
    AuthEvent.objects.record(AuthEvent.Kind.LOGIN, login, username, clientid, broker=BROKER)
    return _answer(login, MONITOR_TAGS if monitor else "")


@broker_endpoint
def vhost(request: HttpRequest) -> HttpResponse:
    data = _fields(request, "username", "vhost", optional=("client_id",))
    decision = vhost_decision(policy.lookup(data["username"]), data["vhost"])
    if not decision.allowed:
        AuthEvent.objects.record(
            AuthEvent.Kind.VHOST, decision, data["username"], data["client_id"], broker=BROKER
        )
    return _answer(decision)


@broker_endpoint
def resource(request: HttpRequest) -> HttpResponse:
    data = _fields(
        request, "username", "vhost", "resource", "name", "permission", optional=("client_id",)
    )
    if data["permission"] not in PERMISSIONS:
        raise wire.WireError(f"permission must be one of {', '.join(PERMISSIONS)}")
    username, clientid = data["username"], data["client_id"]
    decision = resource_decision(
        policy.lookup(username),
        clientid,
        data["vhost"],
        data["resource"],
        data["name"],
        data["permission"],
    )
    if not decision.allowed:
        AuthEvent.objects.record(
            AuthEvent.Kind.RESOURCE, decision, username, clientid, broker=BROKER
        )
    return _answer(decision)


@broker_endpoint
def topic(request: HttpRequest) -> HttpResponse:
    data = _fields(
        request,
        "username",
        "vhost",
        "name",
        "permission",
        "routing_key",
        optional=("variable_map.client_id",),
    )
    access = TOPIC_ACCESS.get(data["permission"])
    if access is None:
        raise wire.WireError("permission must be write or read")
    username, clientid = data["username"], data["variable_map.client_id"]
    mqtt = mqtt_topic(data["routing_key"])
    if data["vhost"] != settings.RABBITMQ_VHOST:
        decision = acl.Decision(False, f"vhost {data['vhost']!r} is not the MQTT vhost")
    elif data["name"] == EVENT_EXCHANGE and access is acl.Access.SUBSCRIBE:
        monitor = is_monitor(username, clientid)
        decision = acl.Decision(
            monitor,
            "connection events are the monitor's"
            if monitor
            else "connection events are the monitor's only",
        )
    elif data["name"] != EXCHANGE:
        decision = acl.Decision(False, f"topics of exchange {data['name']!r} are not MQTT's")
    else:
        try:
            decision = policy.explain_acl(username, clientid, mqtt, access, topics.RABBITMQ)
        except topics.TopicError as exc:
            # RabbitMQ may ask about keys no MQTT topic maps to (a literal '*' or '+').
            decision = acl.Decision(False, f"not a valid MQTT topic: {exc}")
    AuthEvent.objects.record(
        AuthEvent.Kind.ACL, decision, username, clientid, mqtt, access, broker=BROKER
    )
    return _answer(decision)
