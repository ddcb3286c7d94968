"""Return addresses (一货一址): the address book per shop, bindings (search, bulk, CSV) and the report.

Agents may look; supervisors and admins change. Thin routes: the domain is in addresses.py,
bindings.py, csv_io.py and report.py; every query runs through the request's shop scope.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import Response, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from wtforms import BooleanField, StringField
from wtforms.validators import DataRequired, Length, Optional

from app.auth.access import accessible_shops, supervisor_required
from app.extensions import db
from app.models import BindingScope, ReturnAddress, Shop
from app.returns import addresses, bindings, bp, csv_io, report, resolver
from app.web import int_arg


class AddressForm(FlaskForm):
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=100)])
    contact_name = StringField(_l("Contact"), validators=[DataRequired(), Length(max=100)])
    phone = StringField(_l("Phone"), validators=[DataRequired(), Length(max=32)])
    province = StringField(_l("Province"), validators=[DataRequired(), Length(max=50)])
    city = StringField(_l("City"), validators=[DataRequired(), Length(max=50)])
    county = StringField(_l("District"), validators=[Optional(), Length(max=50)])
    detail = StringField(_l("Street address"), validators=[DataRequired(), Length(max=300)])
    postal_code = StringField(_l("Postal code"), validators=[Optional(), Length(max=16)])
    landline = StringField(_l("Landline"), validators=[Optional(), Length(max=32)])
    is_return_address = BooleanField(_l("Receives returns"), default=True)
    is_default_return = BooleanField(_l("Default return address of the shop"))
    is_send_address = BooleanField(_l("Ships orders"))
    is_default_send = BooleanField(_l("Default shipping address"))


def _shop_or_404(shops: list[Shop], shop_id: int | None, *, first_by_default: bool = True) -> Shop:
    """The shop asked for among the user's shops (404 otherwise); none asked: the first, for pages."""
    if not shop_id and first_by_default:
        shop = shops[0] if shops else None
    else:
        shop = next((s for s in shops if s.id == shop_id), None)
    if shop is None:
        abort(404)
    return shop


def _user():
    return current_user._get_current_object()


@bp.route("/")
@login_required
def index():
    shops = accessible_shops()
    shop = _shop_or_404(shops, int_arg("shop")) if shops else None
    query = request.args.get("q", "").strip()[:100]
    only_unbound = request.args.get("unbound") == "1"
    book = _address_book(shop.id) if shop else []
    return render_template(
        "returns/index.html",
        shops=shops,
        shop=shop,
        addresses=book,
        usable=[a for a in book if resolver.usable(a)],
        bindings=bindings.shop_bindings([shop.id]) if shop else [],
        skus=bindings.known_skus(shop.id, query, only_unbound=only_unbound) if shop else [],
        query=query,
        only_unbound=only_unbound,
        can_manage=current_user.is_supervisor,
        usable_address=resolver.usable,
    )


def _address_book(shop_id: int) -> list[ReturnAddress]:
    return db.session.scalars(
        sa.select(ReturnAddress)
        .where(ReturnAddress.shop_id == shop_id)
        .order_by(ReturnAddress.deleted_on_platform, ReturnAddress.is_default_return.desc(), ReturnAddress.name)
    ).all()


def _back(shop_id: int) -> str:
    args = {"shop": shop_id}
    for key in ("q", "unbound"):
        if request.form.get(key):
            args[key] = request.form[key]
    return url_for("returns.index", **args)


@bp.post("/bind")
@supervisor_required
def bind():
    """Bind the selected SKUs (or their products, or the shop) to one address of the shop."""
    shop = _shop_or_404(accessible_shops(), request.form.get("shop_id", type=int), first_by_default=False)
    try:
        scope = BindingScope(request.form.get("scope", "sku"))
    except ValueError:
        abort(400)
    targets: list[bindings.Target] = []
    if scope is BindingScope.SHOP:
        targets.append(bindings.Target(BindingScope.SHOP))
    else:
        for value in request.form.getlist("sku")[:1000]:
            product_id, _sep, sku_id = value.partition("/")
            if scope is BindingScope.SKU:
                targets.append(bindings.Target(BindingScope.SKU, sku_id=sku_id))
            else:
                targets.append(bindings.Target(BindingScope.PRODUCT, product_id=product_id))
    try:
        changed = bindings.bind(_user(), shop.id, targets, request.form.get("address_pk", type=int) or 0)
    except bindings.BindingError as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return redirect(_back(shop.id))
    flash(_("%(n)d bindings saved.", n=changed), "success")
    return redirect(_back(shop.id))


@bp.post("/bindings/<int:binding_pk>/delete")
@supervisor_required
def unbind(binding_pk: int):
    try:
        binding = bindings.unbind(_user(), binding_pk)
    except bindings.BindingError:
        abort(404)
    flash(_("Binding of %(target)s removed.", target=binding.target_key), "success")
    return redirect(url_for("returns.index", shop=binding.shop_id))


@bp.get("/bindings.csv")
@login_required
def export_csv():
    shops = accessible_shops()
    shop_id = int_arg("shop")
    if shop_id:
        shops = [_shop_or_404(shops, shop_id)]
    body = csv_io.export_csv(shops)
    return Response(
        body,
        mimetype="text/csv",
        headers={"Content-Disposition": "attachment; filename=return-address-bindings.csv"},
    )


@bp.post("/bindings/import")
@supervisor_required
def import_csv():
    shops = accessible_shops()
    upload = request.files.get("file")
    shop_id = request.form.get("shop_id", type=int)
    if upload is None or not upload.filename:
        flash(_("Choose a CSV file to import."), "error")
        return redirect(url_for("returns.index", shop=shop_id))
    result = csv_io.import_csv(_user(), upload.read(csv_io.MAX_BYTES + 1), shops)
    if not result.ok:
        return (
            render_template("returns/import_errors.html", result=result, shop_id=shop_id),
            422,
        )
    flash(_("Imported %(rows)d rows: %(n)d bindings changed.", rows=result.rows, n=result.changed), "success")
    return redirect(url_for("returns.index", shop=shop_id))


@bp.get("/report")
@login_required
def report_page():
    shops = accessible_shops()
    shop_ids = [s.id for s in shops]
    return render_template(
        "returns/report.html",
        shops=shops,
        shops_by_id={s.id: s for s in shops},
        summary=report.summary(shop_ids),
        unbound={s.id: report.unbound_skus(s.id) for s in shops},
        fallbacks=report.fallback_approvals(shop_ids),
        days=report.DAYS,
    )


def _form_input(form: AddressForm) -> addresses.AddressInput:
    return addresses.AddressInput(
        **{name: form.data[name] or ("" if name not in BOOLEANS else False) for name in FIELDS}
    )


FIELDS = [f for f in addresses.AddressInput.__dataclass_fields__]
BOOLEANS = {"is_return_address", "is_send_address", "is_default_return", "is_default_send"}


@bp.route("/new", methods=["GET", "POST"])
@supervisor_required
def new_address():
    return _address_form(_shop_or_404(accessible_shops(), int_arg("shop")), None)


@bp.route("/<int:address_pk>/edit", methods=["GET", "POST"])
@supervisor_required
def edit_address(address_pk: int):
    address = db.session.get(ReturnAddress, address_pk)
    if address is None or address.deleted_on_platform:
        abort(404)
    shop = db.session.get(Shop, address.shop_id)
    if shop is None:
        abort(404)
    return _address_form(shop, address)


def _address_form(shop: Shop, address: ReturnAddress | None):
    """Add (``address`` None) or edit an address: saved on the platform first, then stored."""
    form = AddressForm(obj=address)
    if form.validate_on_submit():
        try:
            row = addresses.save(_user(), shop, _form_input(form), address)
        except addresses.AddressError as exc:
            db.session.rollback()
            flash(str(exc), "error")
        else:
            flash(_("“%(name)s” was saved on the platform.", name=row.name), "success")
            return redirect(url_for("returns.index", shop=shop.id))
    return render_template("returns/address_form.html", form=form, shop=shop, address=address)


@bp.post("/sync")
@supervisor_required
def sync():
    shop = _shop_or_404(accessible_shops(), request.form.get("shop_id", type=int), first_by_default=False)
    result = addresses.sync_now(_user(), shop)
    if result.errors:
        flash(_("The platform did not answer the address sync: %(error)s", error=result.errors[0]), "error")
    else:
        flash(_("%(n)d addresses read from the platform.", n=result.listed), "success")
    return redirect(url_for("returns.index", shop=shop.id))
