"""Input of the team pages."""

from __future__ import annotations

from django import forms


class TeamForm(forms.Form):
    name = forms.CharField(max_length=80, widget=forms.TextInput(attrs={"autocomplete": "off"}))
    description = forms.CharField(
        max_length=2000, required=False, widget=forms.Textarea(attrs={"rows": 3})
    )
    listed = forms.BooleanField(
        required=False,
        initial=True,
        label="List the team on the public team leaderboard",
    )


class TeamSettingsForm(forms.Form):
    description = forms.CharField(
        max_length=2000, required=False, widget=forms.Textarea(attrs={"rows": 3})
    )
    listed = forms.BooleanField(
        required=False, label="List the team on the public team leaderboard"
    )
