"""The reader study web app (Flask): a rater enters a name, sees one image at a time, answers
real or fake and a quality of 1 (poor) to 5 (high), and can come back later by the same name.

What the browser sees of an image is its random opaque id and its PNG; the answer key never
leaves the SQLite file. Every POST carries a per-session token (a form field compared with the
one in the signed session cookie) and the cookie is ``SameSite=Lax``, which is enough against
cross-site form posts for a study served on localhost. Templates are Jinja with autoescaping.
The session signing key is kept in the study file, so a restarted server keeps raters signed
in; answers are committed before the next page is shown, so a restart loses nothing.

Run it with ``fetalgan study serve study.db`` (binds 127.0.0.1 by default).
"""

from __future__ import annotations

import secrets
import signal
import sqlite3
import sys
from pathlib import Path

from fetalgan.extras import missing
from fetalgan.study import store

QUALITY_WORDS = {1: "poor", 2: "fair", 3: "acceptable", 4: "good", 5: "high"}


def create_app(db_path: str | Path):
    """The Flask app serving the study in ``db_path`` (which must exist)."""
    try:
        from flask import Flask, Response, abort, g, redirect, render_template, request, session
        from werkzeug.exceptions import HTTPException
    except ModuleNotFoundError as err:
        raise missing(err.name, "study", "the reader study's web app") from err

    db_path = Path(db_path)
    conn = store.connect(db_path)  # fails early, naming the file, if it is not a study
    try:
        meta = store.read_meta(conn)
    finally:
        conn.close()

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=meta["secret_key"],
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_HTTPONLY=True,
        MAX_CONTENT_LENGTH=64 * 1024,
        STUDY_PATH=str(db_path),
    )

    def db() -> sqlite3.Connection:
        if "study_db" not in g:
            g.study_db = store.connect(db_path)
        return g.study_db

    @app.teardown_appcontext
    def close_db(_exc) -> None:
        conn = g.pop("study_db", None)
        if conn is not None:
            conn.close()

    def csrf_token() -> str:
        if "csrf" not in session:
            session["csrf"] = secrets.token_urlsafe(32)
        return session["csrf"]

    app.jinja_env.globals["csrf_token"] = csrf_token

    @app.before_request
    def check_csrf() -> None:
        if request.method == "POST":
            sent = request.form.get("csrf_token", "")
            expected = session.get("csrf")
            if not expected or not secrets.compare_digest(sent, expected):
                abort(400, "the form's session token is missing or stale; reload the page")

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        if request.endpoint != "image":
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        return render_template("error.html", code=err.code, message=err.description), err.code

    def current_rater() -> str | None:
        name = session.get("rater")
        if name is None:
            return None
        known = db().execute("SELECT 1 FROM raters WHERE name = ?", (name,)).fetchone()
        return name if known else None

    @app.get("/healthz")
    def healthz():
        return Response("OK", mimetype="text/plain")

    @app.get("/")
    def index():
        if current_rater():
            return redirect("/rate", code=303)
        return render_template("index.html", total=len(store.study_images(db())))

    @app.post("/start")
    def start():
        try:
            name = store.add_rater(db(), request.form.get("name"))
        except store.AnswerError as err:
            abort(400, str(err))
        session["rater"] = name
        return redirect("/rate", code=303)

    @app.post("/switch")
    def switch():
        session.pop("rater", None)
        return redirect("/", code=303)

    @app.get("/rate")
    def rate():
        rater = current_rater()
        if rater is None:
            return redirect("/", code=303)
        done, total = store.progress(db(), rater)
        image = store.next_image(db(), rater)
        if image is None:
            return render_template("done.html", rater=rater, done=done, total=total)
        return render_template(
            "rate.html",
            rater=rater,
            image=image,
            number=done + 1,
            total=total,
            qualities=QUALITY_WORDS,
        )

    @app.post("/answer")
    def answer():
        rater = current_rater()
        if rater is None:
            abort(400, "no rater: enter your name on the start page first")
        form = request.form
        unknown = set(form) - {"csrf_token", "image_id", "label", "quality"}
        if unknown:
            abort(400, f"unexpected field(s): {', '.join(sorted(unknown))}")
        image_id = form.get("image_id", "")
        if not image_id:
            abort(400, "image_id: missing")
        try:
            store.record_answer(db(), rater, image_id, form.get("label"), form.get("quality"))
        except store.AnswerConflict as err:
            abort(409, str(err))
        except store.AnswerError as err:
            abort(400, str(err))
        return redirect("/rate", code=303)

    @app.get("/image/<image_id>")
    def image(image_id: str):
        png = store.image_png(db(), image_id)
        if png is None:
            abort(404, "no such image")
        response = Response(png, mimetype="image/png")
        response.headers["Cache-Control"] = "private, max-age=3600"
        return response

    return app


def serve(db_path: str | Path, *, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve the study until interrupted. ``port`` 0 picks a free port; the URL is printed."""
    try:
        from werkzeug.serving import make_server
    except ModuleNotFoundError as err:
        raise missing(err.name, "study", "fetalgan study serve") from err

    app = create_app(db_path)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: serving on {host}: the study has no passwords; anyone who can reach "
            "this address can answer as any rater",
            file=sys.stderr,
        )
    server = make_server(host, port, app, threaded=True)

    def stop(signum, _frame):  # SIGTERM (kill, Slurm, systemd): leave like Ctrl-C does
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    print(f"study {db_path} on http://{host}:{server.server_port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        signal.signal(signal.SIGTERM, previous)
        print("study server stopped; every answer given is in the study file", flush=True)
