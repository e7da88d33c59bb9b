"""OpenAI-compatible routes over the /v1/generate handler: `POST /v1/completions`
(routes_openai_completions.py) and `POST /v1/chat/completions` (routes_openai_chat.py), JSON or
SSE chunks ending in `data: [DONE]`; `GET /v1/models` and `GET /v1/models/{model}` here. Same
limits, validation, continuous batching and metrics as /v1/generate (schemas_openai.py maps the
request; openai_common.py holds what both routes share).
"""
from __future__ import annotations

from typing import Literal, Optional

from fastapi import APIRouter, Request
from pydantic import BaseModel

from .errors import model_not_found
from .routes_openai_chat import router as chat
from .routes_openai_completions import router as completions
from .schemas_openai_replies import OPENAI_ERROR_RESPONSES

router = APIRouter()   # no prefix or tags: the included routers carry their own


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "dwserve"
    # vLLM's: the most tokens (prompt + generated) one sequence may hold; null while loading
    max_model_len: Optional[int] = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


@router.get("/v1/models", response_model=ModelList, tags=["openai"])
async def models(request: Request):
    svc = request.app.state.service
    return {"object": "list", "data": [_card(svc)] if svc.generate_model else []}


@router.get("/v1/models/{model}", response_model=ModelCard, responses=OPENAI_ERROR_RESPONSES, tags=["openai"])
async def model(model: str, request: Request):
    """One model's card (the openai client's `models.retrieve`); a name not listed is a 404."""
    served = request.app.state.service.generate_model
    if model != served:
        raise model_not_found(model, served)
    return _card(request.app.state.service)


def _card(svc) -> dict:
    return {"id": svc.generate_model, "max_model_len": getattr(svc.generate, "max_length", None)}


router.include_router(completions)
router.include_router(chat)
