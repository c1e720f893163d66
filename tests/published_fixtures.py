"""Fixtures in the published formats, built from their sources (not from ettin's code):

- a Composer checkpoint of a bert24 FlexBert model: ``torch.save({"state": state, "rng": [...]})`` with state keys
  model / optimizers {"StableAdamW": ...} / schedulers / timestamp {"Timestamp": ...} / rank_zero_seed /
  integrations / metadata (mosaicml/composer v0.24.1 composer/core/state.py lines 1041-1102,
  composer/utils/checkpoint.py lines 726-735, composer/core/time.py lines 579-595), names as bert24 registers
  them (orionw/bert24 src/bert_layers/model.py lines 881-932, 1003-1013, 1504-1520; layers.py lines 286-293),
  the optimizer state as bert24's StableAdamW keeps it (src/optimizer.py lines 89-99, 129-131) and keyed by
  parameter name as torch >= 2.4's get_optimizer_state_dict writes it;
- the weights come from a transformers ModernBertForMaskedLM / ModernBertDecoderForCausalLM, renamed here, so the
  imported model can be compared with the same weights loaded through transformers.
"""

from __future__ import annotations

import datetime
import re

import torch

# the published model_config (JHU-CLSP/ettin-encoder-vs-decoder pretraining/configs/standard/base/encoder_base.yaml)
FLEXBERT = dict(
    init_method="full_megatron", attention_layer="rope", attention_probs_dropout_prob=0.0, attn_out_bias=False,
    attn_out_dropout_prob=0.1, attn_qkv_bias=False, bert_layer="prenorm", embed_dropout_prob=0.0, embed_norm=True,
    final_norm=True, skip_first_prenorm=True, embedding_layer="sans_pos", loss_function="fa_cross_entropy",
    loss_kwargs={"reduction": "mean"}, mlp_dropout_prob=0.0, mlp_in_bias=False, mlp_layer="glu", mlp_out_bias=False,
    normalization="layernorm", norm_kwargs={"eps": 1e-5, "bias": False}, hidden_act="gelu", head_pred_act="gelu",
    activation_function="gelu", padding="unpadded", rotary_emb_dim=None, rotary_emb_base=10000.0,
    rotary_emb_scale_base=None, rotary_emb_interleaved=False, allow_embedding_resizing=True, sliding_window=128,
    global_attn_every_n_layers=3, unpad_embeddings=True, compile_model=True, masked_prediction=True,
)
IDS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2)


def hf_model(objective: str, vocab=96, hidden=64, inter=96, layers=4, heads=2, window=128, theta=10000.0,
             local_theta=None, seed=0):
    from transformers import (
        ModernBertConfig,
        ModernBertDecoderConfig,
        ModernBertDecoderForCausalLM,
        ModernBertForMaskedLM,
    )

    torch.manual_seed(seed)
    local_theta = theta if local_theta is None else local_theta
    shape = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                 num_attention_heads=heads, local_attention=window, global_rope_theta=theta,
                 local_rope_theta=local_theta, attn_implementation="eager", **IDS,
                 rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": theta},
                                  "sliding_attention": {"rope_type": "default", "rope_theta": local_theta}})
    if objective == "mlm":
        model = ModernBertForMaskedLM(ModernBertConfig(**shape))
    else:
        model = ModernBertDecoderForCausalLM(ModernBertDecoderConfig(**shape, sliding_window=window // 2))
    model.fixture = dict(window=window, theta=theta, local_theta=local_theta)  # what bert24's config says
    with torch.no_grad():  # a trained model's norms are not all ones: make every tensor distinct
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def composer_weights(hf, objective: str) -> dict[str, torch.Tensor]:
    """transformers' names -> bert24's (the published ones), in bert24's registration order."""
    head = "head" if objective == "mlm" else "lm_head"
    out, qkv = {}, {}
    for k, v in hf.state_dict().items():
        v = v.detach().clone()
        m = re.match(r"model\.layers\.(\d+)\.attn\.(q_proj|k_proj|v_proj)\.weight$", k)
        if m:
            qkv.setdefault(int(m.group(1)), {})[m.group(2)] = v
            if len(qkv[int(m.group(1))]) == 3:
                parts = qkv[int(m.group(1))]
                out[f"model.bert.encoder.layers.{m.group(1)}.attn.Wqkv.weight"] = torch.cat(
                    [parts["q_proj"], parts["k_proj"], parts["v_proj"]])
        elif k.startswith("model.layers."):
            out["model.bert.encoder." + k[len("model."):]] = v
        elif k.startswith("model."):
            out["model.bert." + k[len("model."):]] = v
        elif k.startswith(head + "."):
            out[f"model.{head}." + k[len(head) + 1:]] = v
        elif k.startswith("decoder."):
            out["model." + k] = v
        else:
            raise KeyError(k)
    if "model.decoder.weight" not in out:
        out["model.decoder.weight"] = out["model.bert.embeddings.tok_embeddings.weight"]
    return out


def published_optimizer(weights, *, lr, max_lr, weight_decay, step, seed=3, by_index=False):
    """bert24 StableAdamW's state_dict over timm's groups [no decay, decay] (main.py lines 93-106)."""
    gen = torch.Generator().manual_seed(seed)
    names = [n for n in weights if n != "model.decoder.weight"]  # the tied weight is one parameter
    plain = [n for n in names if weights[n].ndim <= 1 or n.endswith(".bias")]
    decay = [n for n in names if n not in plain]
    # moments of a run some steps in: gradients of about 1e-2, so the state is not dominated by eps
    state = {n: {"exp_avg": 1e-3 * torch.randn(weights[n].shape, generator=gen),
                 "exp_avg_sq": 1e-5 + 1e-4 * torch.rand(weights[n].shape, generator=gen),
                 "eps_sq": torch.tensor(1e-12), "kahan_comp": None} for n in names}
    groups = []
    for params, wd in ((plain, 0.0), (decay, weight_decay)):
        groups.append(dict(lr=lr, beta1=0.9, beta2=0.98, eps=1e-6, weight_decay=wd, decouple_lr=True, max_lr=max_lr,
                           kahan_sum=False, foreach=True, gradient_release=False, setup=True,
                           step=torch.tensor(step, dtype=torch.int32), params=list(params)))
    if by_index:  # torch < 2.4: optimizer.state_dict(), parameters numbered over the groups in order
        ids = {n: i for i, n in enumerate(plain + decay)}
        state = {ids[n]: s for n, s in state.items()}
        for g in groups:
            g["params"] = [ids[n] for n in g["params"]]
    return {"state": state, "param_groups": groups}


def composer_checkpoint(path, hf, objective, *, batch, tokens, lr=1.5e-3, max_lr=3e-3, weight_decay=3e-4,
                        config=None, by_index=False, drop=()):
    weights = composer_weights(hf, objective)
    cfg, fx = hf.config, hf.fixture
    content = {**FLEXBERT, "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
               "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.num_hidden_layers,
               "num_attention_heads": cfg.num_attention_heads, "sliding_window": fx["window"],
               "rotary_emb_base": fx["theta"], "local_attn_rotary_emb_base": fx["local_theta"],
               "architectures": ["FlexBertForMaskedLM" if objective == "mlm" else "FlexBertForCausalLM"],
               "model_type": "flex_bert", **IDS, "mask_token_id": 3}
    if objective == "clm":
        content.update(masked_prediction=False, causal_mask=True, pad_logits=True)
    content.update(config or {})
    zero = datetime.timedelta(0)
    state = {
        "model": weights,
        "optimizers": {"StableAdamW": published_optimizer(weights, lr=lr, max_lr=max_lr, weight_decay=weight_decay,
                                                          step=batch, by_index=by_index)},
        "schedulers": {"LambdaLR": {"base_lrs": [max_lr, max_lr], "last_epoch": batch, "_last_lr": [lr, lr]}},
        "algorithms": [], "callbacks": {}, "scaler": None,
        "timestamp": {"Timestamp": {"iteration": 0, "epoch": 0, "batch": batch, "sample": batch * 4,
                                    "token": tokens, "epoch_in_iteration": 0, "token_in_iteration": tokens,
                                    "batch_in_epoch": batch, "sample_in_epoch": batch * 4, "token_in_epoch": tokens,
                                    "total_wct": datetime.timedelta(seconds=90), "iteration_wct": zero,
                                    "epoch_wct": zero, "batch_wct": datetime.timedelta(seconds=1)}},
        "rank_zero_seed": 21, "run_name": "encoder_no_packing", "train_metrics": {}, "eval_metrics": {},
        "integrations": {"huggingface": {"model": {"config": {"content": content, "class":
                         f"src.bert_layers.model.{content['architectures'][0]}"}}}},
        "metadata": {"composer_env_info": {"composer_version": "0.24.1"}},
    }
    for key in drop:
        state.pop(key)
    rng = [{"python": (3, (), None), "torch": torch.get_rng_state()} for _ in range(4)]
    torch.save({"state": state, "rng": rng}, path)
    return path


def write_order(folder, steps, rows_per_file=None, row_group_size=None):
    """A published order folder: zstd Parquet `steps_AAAAAA_to_BBBBBB.parquet` files with `input_ids`
    (list<uint16>) and `step` (the dataset card of jhu-clsp/ettin-data-order). `steps`: {step: [row, ...]}, rows
    as lists of ids; `rows_per_file` steps a file (default: all in one)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    numbers = sorted(steps)
    per = rows_per_file or len(numbers)
    schema = pa.schema([("input_ids", pa.list_(pa.uint16())), ("step", pa.int64())])
    for i in range(0, len(numbers), per):
        chunk = numbers[i:i + per]
        ids = [row for s in chunk for row in steps[s]]
        step = [s for s in chunk for _ in steps[s]]
        table = pa.table({"input_ids": pa.array(ids, type=pa.list_(pa.uint16())), "step": pa.array(step, pa.int64())},
                         schema=schema)
        pq.write_table(table, folder / f"steps_{chunk[0]:06d}_to_{chunk[-1]:06d}.parquet", compression="zstd",
                       row_group_size=row_group_size)
    return folder
