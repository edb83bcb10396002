"""The secret the tests sign and verify the change feed's webhooks with (the receiver
is ``nomads_cluster.testing.WebhookReceiver``)."""

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # 24 bytes, base64
