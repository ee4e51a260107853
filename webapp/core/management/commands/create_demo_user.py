"""Create (or reset) a demo user in every role but admin, and print its new password."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandParser

from webapp.core.roles import ADMIN, ALL_ROLES


class Command(BaseCommand):
    help = (
        "Create the user USERNAME (default: demo) in every role except admin, or reset its "
        "password if it exists, and print the new random password. For local demos only."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--username", default="demo", help="Login name of the demo user (default: demo)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        username: str = options["username"]
        password = secrets.token_urlsafe(12)
        user_model = get_user_model()
        user, created = user_model.objects.get_or_create(username=username)
        user.set_password(password)
        user.save()
        roles = [role for role in ALL_ROLES if role != ADMIN]
        for role in roles:
            group, _ = Group.objects.get_or_create(name=role)
            user.groups.add(group)
        action = "created" if created else "password reset for existing user"
        self.stdout.write(f"demo user {username!r} {action}; roles: {', '.join(roles)}")
        self.stdout.write(f"password: {password}")
