"""``proxy_options`` (azure-iot-device's ``ProxyOptions``): the clients tunnel through an HTTP
proxy with ``CONNECT`` (MQTT, MQTT over WebSockets, file upload's HTTPS), Basic authentication
when a user name is given; SOCKS proxies are refused by name; the password never shows."""

import asyncio
import base64

import pytest
from device_doubles import ConnectProxy

from azure_iot_rs import IoTHubDeviceClient, IoTHubModuleClient, ProxyOptions
from azure_iot_rs import aio
from azure_iot_rs.exceptions import CredentialError


@pytest.fixture
def proxy():
    p = ConnectProxy()
    yield p
    p.close()


def test_mqtt_over_websockets_goes_through_the_proxy(hub, device, proxy):
    kwargs = {**hub.device_kwargs(), "websockets": True, "port": hub.ports["https"]}
    client = IoTHubDeviceClient.create_from_connection_string(
        device["connection_string"], proxy_options=ProxyOptions("HTTP", "127.0.0.1", proxy.port), **kwargs
    )
    client.send_message("through the proxy")
    client.shutdown()
    assert [target for target, _ in proxy.tunnels] == [f"{hub.hostname}:{hub.ports['https']}"]
    assert [e["body"] for e in hub.telemetry(device["device_id"], 1)] == ["through the proxy"]


def test_plain_mqtt_and_symmetric_key_go_through_the_proxy_with_basic_auth(hub, device):
    expected = "Basic " + base64.b64encode(b"alice:s3cret").decode()
    proxy = ConnectProxy(require_auth=expected)
    try:
        client = IoTHubDeviceClient.create_from_symmetric_key(
            device["key"], hub.hostname, device["device_id"],
            proxy_options=ProxyOptions("HTTP", "127.0.0.1", proxy.port, "alice", "s3cret"), **hub.device_kwargs(),
        )
        client.send_message("mqtt through the proxy")
        client.shutdown()
        assert proxy.tunnels == [(f"{hub.hostname}:{hub.ports['mqtt']}", expected)]
    finally:
        proxy.close()


def test_file_upload_goes_through_the_proxy(hub, device, proxy):
    client = IoTHubDeviceClient.create_from_connection_string(
        device["connection_string"], proxy_options=ProxyOptions(3, "127.0.0.1", proxy.port), **hub.device_kwargs()
    )
    client.get_storage_info_for_blob("through-proxy.txt")
    client.shutdown()
    targets = [target for target, _ in proxy.tunnels]
    assert f"{hub.hostname}:{hub.ports['https']}" in targets, targets


def test_socks_proxies_are_refused_by_name():
    for kind in ("SOCKS4", "SOCKS5", 1, 2):
        with pytest.raises(ValueError, match="SOCKS[45] proxies are not supported"):
            IoTHubModuleClient.create_from_connection_string(
                "HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey=aGVsbG8=", proxy_options=ProxyOptions(kind, "p", 1080)
            )
    with pytest.raises(ValueError, match="Invalid Proxy Type"):
        ProxyOptions("FTP", "p", 21)
    with pytest.raises(TypeError, match="proxy_options"):
        IoTHubDeviceClient.create_from_connection_string(
            "HostName=h;DeviceId=d;SharedAccessKey=aGVsbG8=", proxy_options="http://p:3128"
        )


def test_the_password_is_not_in_repr():
    options = ProxyOptions("HTTP", "proxy.example", "3128", "alice", "s3cret")
    assert options.proxy_port == 3128 and options.proxy_type == "HTTP" and options.proxy_password == "s3cret"
    assert "s3cret" not in repr(options) and "alice" in repr(options)


def test_a_proxy_that_refuses_the_credentials_is_a_credential_error(hub, device):
    proxy = ConnectProxy(require_auth="Basic nobody")
    try:
        client = IoTHubDeviceClient.create_from_connection_string(
            device["connection_string"], connection_retry=False,
            proxy_options=ProxyOptions("HTTP", "127.0.0.1", proxy.port, "alice", "wrong-password"), **hub.device_kwargs(),
        )
        with pytest.raises(CredentialError, match="407") as raised:
            client.connect()
        assert "wrong-password" not in str(raised.value)
        client.shutdown()
    finally:
        proxy.close()


def test_aio_client_through_the_proxy(hub, device, proxy):
    async def run() -> None:
        client = aio.IoTHubDeviceClient.create_from_connection_string(
            device["connection_string"], proxy_options=ProxyOptions("HTTP", "127.0.0.1", proxy.port), **hub.device_kwargs()
        )
        await client.send_message("aio through the proxy")
        await client.shutdown()

    asyncio.run(run())
    assert [target for target, _ in proxy.tunnels] == [f"{hub.hostname}:{hub.ports['mqtt']}"]
