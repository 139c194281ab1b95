"""The page cache: Gradio's page, config and API description computed once per set of headers."""

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from ui.page_cache import PageCache


def counting_app() -> tuple[Starlette, list[str]]:
    calls: list[str] = []

    async def config(request: Request) -> Response:
        calls.append(request.headers.get("cookie", ""))
        if request.query_params.get("fail"):
            return JSONResponse({"error": "no"}, status_code=500)
        return JSONResponse({"n": len(calls), "user": request.headers.get("cookie", "")})

    async def other(request: Request) -> Response:
        calls.append("other")
        return JSONResponse({"n": len(calls)})

    app = Starlette(routes=[Route("/config", config), Route("/other", other, methods=["GET", "POST"])],
                    middleware=[Middleware(PageCache)])
    return app, calls


def test_the_same_request_is_answered_from_the_first_answer() -> None:
    app, calls = counting_app()
    client = TestClient(app)
    first, second = client.get("/config"), client.get("/config")
    assert first.json() == second.json() == {"n": 1, "user": ""}
    assert second.headers["content-type"] == "application/json" and len(calls) == 1


def test_each_login_cookie_gets_its_own_answer_and_errors_are_never_kept() -> None:
    app, calls = counting_app()
    client = TestClient(app)
    ana = client.get("/config", headers={"cookie": "access-token=ana"}).json()
    bob = client.get("/config", headers={"cookie": "access-token=bob"}).json()
    assert (ana["user"], bob["user"]) == ("access-token=ana", "access-token=bob") and len(calls) == 2
    assert client.get("/config?fail=1").status_code == 500
    assert client.get("/config?fail=1").status_code == 500 and len(calls) == 4  # computed again each time


def test_other_paths_and_methods_pass_through() -> None:
    app, calls = counting_app()
    client = TestClient(app)
    answers = [client.get("/other").json()["n"], client.get("/other").json()["n"], client.post("/other").json()["n"]]
    assert answers == [1, 2, 3] and calls == ["other"] * 3
