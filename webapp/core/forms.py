"""Forms of the core pages."""

from __future__ import annotations

import math
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm

from webapp.core import login_throttle
from webapp.core.audit import Action, client_address_from_request, record_audit_event


class ThrottledAuthenticationForm(AuthenticationForm):
    """Login form that rejects a username and address after too many failed attempts."""

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username") or ""
        client_address = client_address_from_request(self.request) if self.request else None

        if login_throttle.is_throttled(username, client_address):
            record_audit_event(
                Action.LOGIN_THROTTLED,
                actor=None,
                client_address=client_address,
                details={"username": username[:150]},
            )
            minutes = math.ceil(settings.LOGIN_THROTTLE_WINDOW_S / 60)
            raise forms.ValidationError(
                "Too many failed logins for this username from your address. "
                f"Wait {minutes} minutes and try again, or ask an administrator to reset your password.",
                code="throttled",
            )

        try:
            cleaned = super().clean()
        except forms.ValidationError:
            login_throttle.record_failure(username, client_address)
            raise
        login_throttle.reset_failures(username, client_address)
        return cleaned
