"""Bindings as CSV: export and import round trip; bad files rejected whole, with line numbers."""

from __future__ import annotations

import io

from app.extensions import db
from app.models import ReturnAddress, Shop
from tests.factories import make_shop
from tests.returns.conftest import address_pk, audit_of, bindings_of
from tests.returns.test_bindings import OTHER_SKU, PRODUCT, SKU, bind


def upload(client, text: str, shop_id: int, bom: bool = True):
    data = ("\ufeff" + text if bom else text).encode("utf-8")
    return client.post(
        "/return-addresses/bindings/import",
        data={"shop_id": shop_id, "file": (io.BytesIO(data), "bindings.csv")},
        content_type="multipart/form-data",
    )


def appid(app, shop_id: int) -> str:
    with app.app_context():
        found = db.session.get(Shop, shop_id).appid
        db.session.remove()
    return found


def test_export_then_import_round_trip(app, supervised, login):
    supervised.order("o_buyer_2", items=[OTHER_SKU])
    shop_id = supervised.shop_id
    client = login("zhang")
    guangzhou, hangzhou = address_pk(app, shop_id, "广州退货仓"), address_pk(app, shop_id, "杭州总仓")
    bind(client, shop_id, guangzhou)
    bind(client, shop_id, hangzhou, "product", skus=("10000202/20000202",))
    bind(client, shop_id, hangzhou, "shop", skus=())
    before = bindings_of(app, shop_id)

    exported = client.get(f"/return-addresses/bindings.csv?shop={shop_id}")
    assert exported.mimetype == "text/csv"
    body = exported.get_data(as_text=True)
    assert body.startswith("\ufeffshop_appid,target,id,address_id,address_name,title\r\n")
    assert f"{appid(app, shop_id)},sku,{SKU}," in body and ",广州退货仓,羊绒围巾 经典格纹" in body

    # Wipe the bindings, import the exported file (Excel's BOM and CRLF included): the same bindings.
    from app.models import AddressBinding

    with app.app_context():
        db.session.query(AddressBinding).delete()
        db.session.commit()
        db.session.remove()
    answer = upload(client, body.lstrip("\ufeff"), shop_id)
    assert answer.status_code == 302
    assert bindings_of(app, shop_id) == before
    assert len([a for a in audit_of(app) if a[0] == "return_address.bind" and a[2]["via"] == "csv"]) == 3


def test_an_address_may_be_named_and_the_shop_left_out(app, supervised, login):
    answer = upload(login("zhang"), f"target,id,address_name\nsku,{SKU},广州退货仓\n", supervised.shop_id, bom=False)
    assert answer.status_code == 302
    assert bindings_of(app, supervised.shop_id) == {f"sku:{SKU}": "广州退货仓"}


def test_bad_rows_reject_the_whole_file_with_line_numbers(app, supervised, login):
    shop_id = supervised.shop_id
    with app.app_context():
        other = make_shop("别人的店", appid="wxforeignforeign00")
        db.session.flush()
        db.session.add(
            ReturnAddress(shop_id=other.id, address_id="addr_foreign", name="别人的仓", is_return_address=True)
        )
        db.session.commit()
        db.session.remove()
    mine = appid(app, shop_id)
    text = "\r\n".join(
        [
            "shop_appid,target,id,address_id,address_name",
            f"{mine},sku,{SKU},,广州退货仓",  # line 2: fine on its own
            f"{mine},sku,99999999,,广州退货仓",  # 3: unknown SKU
            f"{mine},product,{PRODUCT},addr_foreign,",  # 4: another shop's address
            f"{mine},sku,{SKU},,杭州总仓",  # 5: duplicate of line 2
            f"{mine},warehouse,{SKU},,杭州总仓",  # 6: bad target
            f"wxforeignforeign00,sku,{SKU},addr_foreign,",  # 7: a shop the user does not serve
            f"{mine},product,{PRODUCT},,",  # 8: no address
        ]
    )
    client = login("zhang")
    answer = upload(client, text, shop_id)
    assert answer.status_code == 422
    html = answer.get_data(as_text=True)
    lines = [int(n) for n in __import__("re").findall(r'<tr><td class="num">(\d+)</td>', html)]
    assert lines == [3, 4, 5, 6, 7, 8]
    assert "99999999" in html and "addr_foreign" in html and "wxforeignforeign00" in html
    # Nothing changed: the good line 2 was not applied either.
    assert bindings_of(app, shop_id) == {}
    assert audit_of(app) == []


def test_files_that_are_not_bindings_are_refused(app, supervised, login):
    client = login("zhang")
    shop_id = supervised.shop_id
    for text in ("", "sku,id\n", "target,id,address_name\n"):
        assert upload(client, text, shop_id, bom=False).status_code == 422
    latin1 = io.BytesIO("target,id,address_name\nsku,1,仓".encode("gb18030"))
    answer = client.post(
        "/return-addresses/bindings/import",
        data={"shop_id": shop_id, "file": (latin1, "b.csv")},
        content_type="multipart/form-data",
    )
    assert answer.status_code == 422
    assert bindings_of(app, shop_id) == {}
