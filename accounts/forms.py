"""Forms for the account, organization, member, token and site pages. They validate input only;
the writes happen in accounts.services."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from accounts.models import Membership, User, normalize_origin


class ProfileForm(forms.Form):
    display_name = forms.CharField(
        max_length=80,
        required=False,
        help_text="The name you go by everywhere: the menu, your organizations, leaderboards, "
        "team pages, your profile and to owners of campaigns you work on. Empty: "
        "“contributor {number}”, never your email address.",
    )
    public_profile = forms.BooleanField(
        required=False,
        label="Show me on public leaderboards",
        help_text="Off: your work still counts for your teams, but you are left off leaderboards "
        "and team member lists, and only you can see your profile.",
    )

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The neutral handle of rewards.selectors.display_name; accounts cannot import rewards
        # (dependencies point the other way), so tests pin that the two agree.
        field = self.fields["display_name"]
        field.help_text = field.help_text.replace("{number}", str(user.pk))


class AccountDeleteForm(forms.Form):
    password = forms.CharField(
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
        help_text="Enter your password to confirm.",
    )

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user

    def clean_password(self) -> str:
        password: str = self.cleaned_data["password"]
        if not self.user.check_password(password):
            raise ValidationError("That password is not correct.")
        return password


class OrganizationCreateForm(forms.Form):
    name = forms.CharField(max_length=120, widget=forms.TextInput(attrs={"placeholder": "Name"}))


class MemberAddForm(forms.Form):
    email = forms.EmailField(
        label="Email address",
        help_text="Someone without an account gets an email inviting them to choose a password.",
    )
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.MEMBER)


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Membership.Role.choices)


class TokenCreateForm(forms.Form):
    name = forms.CharField(
        max_length=80,
        help_text="What uses the token, for example “ci pipeline” or “lab server”.",
    )


class SiteRegisterForm(forms.Form):
    name = forms.CharField(max_length=80, widget=forms.TextInput(attrs={"placeholder": "My blog"}))
    origin = forms.CharField(
        max_length=270,
        widget=forms.TextInput(attrs={"placeholder": "https://example.com"}),
        help_text="Scheme, host and port only, exactly as the browser's address bar shows the "
        "site: https://example.com or http://localhost:8080.",
    )

    def clean_origin(self) -> str:
        return normalize_origin(self.cleaned_data["origin"])
