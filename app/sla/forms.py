from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import IntegerField, SelectChoice, SelectField, StringField
from wtforms.validators import InputRequired, NumberRange, Optional, Regexp, ValidationError

HHMM = Regexp(r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$", message=_l("Use HH:MM, e.g. 08:00 (24:00 is midnight)."))


class SlaSettingsForm(FlaskForm):
    threshold_seconds = IntegerField(
        _l("Reply within (seconds)"), validators=[InputRequired(), NumberRange(min=10, max=3600)]
    )
    warning_seconds = IntegerField(
        _l("Warn after (seconds)"), validators=[InputRequired(), NumberRange(min=1, max=3600)]
    )
    unit = SelectField(
        _l("Count per"),
        choices=[SelectChoice("turn", _l("Buyer turn")), SelectChoice("message", _l("Buyer message"))],
    )
    window_start = StringField(_l("Assessment window from"), validators=[InputRequired(), HHMM])
    window_end = StringField(_l("Assessment window until"), validators=[InputRequired(), HHMM])
    reassign_after_seconds = IntegerField(
        _l("Reassign unanswered after (seconds)"), validators=[Optional(), NumberRange(min=10, max=3600)]
    )

    def validate_warning_seconds(self, field):
        if self.threshold_seconds.data and field.data and field.data >= self.threshold_seconds.data:
            raise ValidationError(_l("The warning must come before the threshold."))
