"""Create (or reset) the demo team: one login per job, all with one new password, printed."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from webapp.core.roles import ADJUDICATOR, COORDINATOR, READER, RESEARCHER

# Readers are blinded to predictions and ground truth until they submit their own label, so the
# login that shows the whole product holds no reader role; two readers make disagreement
# possible, and the adjudicator reads too, because consensus follows its own blinded read.
DEMO_TEAM: dict[str, tuple[str, ...]] = {
    "": (COORDINATOR, RESEARCHER),
    "-reader1": (READER,),
    "-reader2": (READER,),
    "-adjudicator": (READER, ADJUDICATOR),
}


class Command(BaseCommand):
    help = (
        "Create the demo team, or reset its password: USERNAME (default: demo) as coordinator "
        "and researcher, USERNAME-reader1 and USERNAME-reader2 as readers, and "
        "USERNAME-adjudicator as reader and adjudicator. All get one new random password, "
        "which is printed. For local demos only."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--username",
            default="demo",
            help="Login name of the main demo user and prefix of the others (default: demo).",
        )

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        prefix: str = options["username"]
        password = secrets.token_urlsafe(12)
        user_model = get_user_model()
        for suffix, roles in DEMO_TEAM.items():
            username = prefix + suffix
            user, created = user_model.objects.get_or_create(username=username)
            user.set_password(password)
            user.save()
            # The team's roles are exactly these, also when an earlier version granted more.
            user.groups.set([Group.objects.get_or_create(name=role)[0] for role in roles])
            action = "created" if created else "password reset for existing user"
            self.stdout.write(f"demo user {username!r} {action}; roles: {', '.join(roles)}")
        self.stdout.write(f"password (the same for every demo user): {password}")
