"""The study web app through Flask's test client: the flow, the refusals, what the page shows."""

from __future__ import annotations

import sqlite3

import pytest
from study_helpers import csrf_from, image_id_from

from fetalgan.study import store
from fetalgan.study.app import create_app


def _answers(path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT rater, image_id, label, quality FROM answers").fetchall()


def _sign_in(client, name: str = "Ada") -> str:
    """Post the name form; returns the first rating page's HTML."""
    token = csrf_from(client.get("/").get_data(as_text=True))
    response = client.post("/start", data={"name": name, "csrf_token": token})
    assert response.status_code == 303 and response.headers["Location"].endswith("/rate")
    return client.get("/rate").get_data(as_text=True)


def test_rater_answers_every_image_in_order(study_file):
    client = create_app(study_file).test_client()
    assert client.get("/healthz").get_data(as_text=True) == "OK"
    html = _sign_in(client)
    conn = store.connect(study_file)
    order = [image.id for image in store.study_images(conn)]
    conn.close()
    given = []
    for k, expected_id in enumerate(order):
        assert f"Image {k + 1} of {len(order)}" in html
        image_id = image_id_from(html)
        assert image_id == expected_id
        image = client.get(f"/image/{image_id}")
        assert image.status_code == 200 and image.mimetype == "image/png"
        label, quality = ("real", "fake")[k % 2], 1 + k % 5
        given.append(("Ada", image_id, label, quality))
        response = client.post(
            "/answer",
            data={"csrf_token": csrf_from(html), "image_id": image_id, "label": label,
                  "quality": str(quality)},
        )  # fmt: skip
        assert response.status_code == 303
        html = client.get("/rate").get_data(as_text=True)
    assert "You have answered all 8 of 8 images" in html
    assert sorted(_answers(study_file)) == sorted(given)


def test_page_never_carries_the_answer_key(study_file):
    client = create_app(study_file).test_client()
    html = _sign_in(client)
    conn = store.connect(study_file)
    key = store.answer_key(conn)
    conn.close()
    image_id = image_id_from(html)
    for info in key.values():
        directory = info["source"].split(":", 1)[1].rsplit("/", 1)[0]
        assert directory not in html
    lowered = html.lower()
    assert "is_real" not in lowered and "source" not in lowered
    # the image response: PNG bytes and caching headers only, no file name or label
    response = client.get(f"/image/{image_id}")
    assert "Content-Disposition" not in response.headers
    assert not any("real" in v.lower() or "fake" in v.lower() for v in response.headers.values())
    assert client.get("/image/does-not-exist").status_code == 404


def test_names_and_messages_are_escaped(study_file):
    client = create_app(study_file).test_client()
    html = _sign_in(client, '<script>alert("x")</script>')
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    response = client.post(
        "/answer",
        data={"csrf_token": csrf_from(html), "image_id": "<img src=x>", "label": "real",
              "quality": "3"},
    )  # fmt: skip
    assert response.status_code == 400
    body = response.get_data(as_text=True)
    assert "<img src=x>" not in body and "&lt;img src=x&gt;" in body
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")


def _valid_form(html: str) -> dict[str, str]:
    return {"csrf_token": csrf_from(html), "image_id": image_id_from(html), "label": "fake",
            "quality": "3"}  # fmt: skip


@pytest.mark.parametrize(
    "change, message",
    [
        ({"label": None}, "label: missing"),
        ({"quality": None}, "quality: missing"),
        ({"image_id": None}, "image_id: missing"),
        ({"quality": "0"}, "outside 1..5"),
        ({"quality": "6"}, "outside 1..5"),
        ({"quality": "2.5"}, "whole number"),
        ({"quality": "three"}, "whole number"),
        ({"label": "maybe"}, "is not one of"),
        ({"label": "REAL"}, "is not one of"),
        ({"image_id": "0123456789abcdef"}, "no such image"),
        ({"csrf_token": None}, "session token"),
        ({"csrf_token": "forged"}, "session token"),
        ({"is_real": "1"}, "unexpected field"),
    ],
)
def test_malformed_answers_are_refused_and_store_nothing(study_file, change, message):
    client = create_app(study_file).test_client()
    form = _valid_form(_sign_in(client))
    first = form["image_id"]
    for key, value in change.items():
        if value is None:
            form.pop(key)
        else:
            form[key] = value
    response = client.post("/answer", data=form)
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert _answers(study_file) == []
    assert image_id_from(client.get("/rate").get_data(as_text=True)) == first  # still there


def test_answer_without_a_rater_or_with_a_changed_mind(study_file):
    client = create_app(study_file).test_client()
    html = _sign_in(client)
    form = _valid_form(html)
    other = create_app(study_file).test_client()
    other_html = other.get("/").get_data(as_text=True)
    response = other.post("/answer", data=form | {"csrf_token": csrf_from(other_html)})
    assert response.status_code == 400 and "enter your name" in response.get_data(as_text=True)
    assert client.post("/answer", data=form).status_code == 303
    assert client.post("/answer", data=form).status_code == 303  # the same form twice: kept once
    response = client.post("/answer", data=form | {"label": "real"})
    assert response.status_code == 409 and "cannot be changed" in response.get_data(as_text=True)
    assert _answers(study_file) == [("Ada", form["image_id"], "fake", 3)]


def test_bad_name_is_refused(study_file):
    client = create_app(study_file).test_client()
    token = csrf_from(client.get("/").get_data(as_text=True))
    response = client.post("/start", data={"name": "   ", "csrf_token": token})
    assert response.status_code == 400 and "enter your name" in response.get_data(as_text=True)
    with sqlite3.connect(study_file) as conn:
        assert conn.execute("SELECT COUNT(*) FROM raters").fetchone()[0] == 0


def test_resume_after_restart_and_by_name(study_file):
    """A new app on the same file (a restarted server) keeps the rater signed in (the session
    key lives in the study file) and shows the next unanswered image; a new browser resumes by
    entering the same name; switching rater forgets the session."""
    client = create_app(study_file).test_client()
    html = _sign_in(client)
    first = image_id_from(html)
    assert client.post("/answer", data=_valid_form(html)).status_code == 303

    client.application = create_app(study_file)  # the restarted server, same cookie jar
    html = client.get("/rate").get_data(as_text=True)
    assert "Image 2 of 8" in html and image_id_from(html) != first

    fresh = create_app(study_file).test_client()
    assert "Image 2 of 8" in _sign_in(fresh, "Ada")
    html = fresh.get("/rate").get_data(as_text=True)
    assert fresh.post("/switch", data={"csrf_token": csrf_from(html)}).status_code == 303
    assert fresh.get("/rate").headers["Location"].endswith("/")
    assert "Image 1 of 8" in _sign_in(fresh, "Bea")
