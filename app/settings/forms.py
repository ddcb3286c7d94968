from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    IntegerField,
    PasswordField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    SubmitField,
)
from wtforms.validators import URL, DataRequired, EqualTo, InputRequired, Length, NumberRange, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from app.models import Role

ROLE_CHOICES = [
    SelectChoice(Role.AGENT.value, _l("Agent")),
    SelectChoice(Role.SUPERVISOR.value, _l("Supervisor")),
    SelectChoice(Role.ADMIN.value, _l("Admin")),
]
LANGUAGE_CHOICES = [SelectChoice("zh_CN", "简体中文"), SelectChoice("en", "English")]
TIMEZONE_CHOICES = [
    SelectChoice("Asia/Shanghai", "Asia/Shanghai (UTC+8)"),
    SelectChoice("Asia/Hong_Kong", "Asia/Hong_Kong (UTC+8)"),
    SelectChoice("Asia/Taipei", "Asia/Taipei (UTC+8)"),
    SelectChoice("Asia/Urumqi", "Asia/Urumqi (UTC+6)"),
    SelectChoice("Asia/Tokyo", "Asia/Tokyo (UTC+9)"),
    SelectChoice("Asia/Singapore", "Asia/Singapore (UTC+8)"),
    SelectChoice("UTC", "UTC"),
]


class MultiCheckboxField(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class ProfileForm(FlaskForm):
    display_name = StringField(_l("Display name"), validators=[DataRequired(), Length(max=100)])
    language = SelectField(_l("Language"), choices=LANGUAGE_CHOICES)
    submit = SubmitField(_l("Save"))


class LanguageForm(FlaskForm):
    language = SelectField(_l("Language"), choices=LANGUAGE_CHOICES)


class PasswordForm(FlaskForm):
    current_password = PasswordField(_l("Current password"), validators=[DataRequired()])
    new_password = PasswordField(_l("New password"), validators=[DataRequired(), Length(min=8, max=256)])
    confirm = PasswordField(
        _l("Repeat new password"), validators=[DataRequired(), EqualTo("new_password", _l("Passwords differ."))]
    )
    submit = SubmitField(_l("Change password"))


class ShopForm(FlaskForm):
    name = StringField(_l("Shop name"), validators=[DataRequired(), Length(max=100)])
    appid = StringField(_l("AppID"), validators=[DataRequired(), Length(max=64)])
    app_secret = PasswordField(_l("AppSecret"), validators=[Optional(), Length(max=128)])
    push_token = PasswordField(_l("Push Token"), validators=[Optional(), Length(max=64)])
    encoding_aes_key = PasswordField(_l("EncodingAESKey"), validators=[Optional(), Length(min=43, max=43)])
    api_base_url = StringField(
        _l("API base URL"),
        default="https://api.weixin.qq.com",
        validators=[DataRequired(), URL(require_tld=False), Length(max=255)],
    )
    timezone = SelectField(_l("Time zone"), choices=TIMEZONE_CHOICES, default="Asia/Shanghai")
    is_active = BooleanField(_l("Active"), default=True)
    submit = SubmitField(_l("Save"))


class UserForm(FlaskForm):
    username = StringField(_l("Username"), validators=[DataRequired(), Length(max=64)])
    display_name = StringField(_l("Display name"), validators=[DataRequired(), Length(max=100)])
    password = PasswordField(_l("Password"), validators=[Optional(), Length(min=8, max=256)])
    role = SelectField(_l("Role"), choices=ROLE_CHOICES, default=Role.AGENT.value)
    capacity = IntegerField(
        _l("Capacity (open conversations)"), default=10, validators=[InputRequired(), NumberRange(min=0, max=200)]
    )
    language = SelectField(_l("Language"), choices=LANGUAGE_CHOICES)
    shops = MultiCheckboxField(_l("Shops served"), coerce=int)
    is_active = BooleanField(_l("Active"), default=True)
    submit = SubmitField(_l("Save"))
