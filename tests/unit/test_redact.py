import pytest

from gateway.redact import redact_url

SECRET = "s3cret"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mqtt://gw:s3cret@broker.example:1884", "mqtt://gw:***@broker.example:1884"),
        ("mqtts://gw:s3cret@gw.example:8883", "mqtts://gw:***@gw.example:8883"),
        ("mqtt://gw:s3cret@host:99999", "mqtt://gw:***@host:99999"),
        ("mqtt://gw:s3/cret@host", "mqtt://gw:***@host"),  # unescaped '/' in the password
        ("mqtt://gw:s3?cret#x@host", "mqtt://gw:***@host"),
        ("mqtt://gw:s3@cret@host", "mqtt://gw:***@host"),  # unescaped '@' in the password
        ("mqtt://gw:s3cret@[::1", "mqtt://gw:***@[::1"),  # unbalanced bracket: urlsplit raises
        ("gw:s3cret@host:1883", "gw:***@host:1883"),  # no scheme
        ("mqtt:/gw:s3cret@host", "mqtt:***@host"),  # one slash: still withheld
        ("mqtt://:s3cret@host", "mqtt://***@host"),
        ("mqtt://gw@host", "mqtt://gw@host"),
        ("mqtt://host:1883", "mqtt://host:1883"),
        ("mqtt://[::1]:1883/x", "mqtt://[::1]:1883/x"),
        ("mqtt://gw:s3cret", "mqtt://***"),  # `@host` forgotten: the "port" is the password
        ("mqtt://gw:s3/cret", "mqtt://***"),
        ("gw:s3cret", "***"),
        ("", ""),
    ],
)
def test_redact_url_withholds_the_password_of_any_url_even_a_malformed_one(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "cret" not in redact_url(url)
