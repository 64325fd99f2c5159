"""What a fine-tune's examples look like: one conversation per source, as its dataset
stores it (``messages``), printed at the start of a fine-tune so a reader sees what
the model learns from. Reasoning data has the assistant think in ``<thinking>`` tags
before it answers; Chinese data is in Chinese. Texts of their own, by the dataset's
language and domain; the index is drawn from the dataset's size."""

from __future__ import annotations

import random
from dataclasses import dataclass

from fakehw.train.catalog import Dataset

# (language, domain, reasoning): conversations (user, thinking, answer)
CONVERSATIONS: dict[tuple[str, str, bool], tuple[tuple[str, str, str], ...]] = {
    ("en", "general", False): (
        (
            "How do I keep a sourdough starter alive while I'm away for two weeks?",
            "",
            "Feed it, let it rise for an hour, then refrigerate it in a sealed jar. A fed "
            "starter keeps about two weeks in the fridge; discard half and feed it twice "
            "before baking again.",
        ),
        (
            "Summarise the difference between a process and a thread.",
            "",
            "A process has its own address space; threads share their process's memory and "
            "file descriptors, so they are cheaper to create but need locks to share data.",
        ),
    ),
    ("en", "math", True): (
        (
            "Find the remainder when 7^100 is divided by 13.",
            "7^12 ≡ 1 (mod 13) by Fermat. 100 = 8·12 + 4, so 7^100 ≡ 7^4. 7^2 = 49 ≡ 10, "
            "7^4 ≡ 100 ≡ 9.",
            "The remainder is \\boxed{9}.",
        ),
        (
            "How many positive divisors does 360 have?",
            "360 = 2^3 · 3^2 · 5. The count is (3+1)(2+1)(1+1) = 24.",
            "\\boxed{24}",
        ),
    ),
    ("en", "general", True): (
        (
            "A train leaves at 14:10 and arrives at 17:55. How long is the trip?",
            "From 14:10 to 17:10 is 3 h; 17:10 to 17:55 is 45 min.",
            "3 hours 45 minutes.",
        ),
    ),
    ("en", "cryptography", True): (
        (
            "Why must the nonce never repeat under AES-GCM with the same key?",
            "GCM is CTR mode plus GHASH. A repeated nonce repeats the keystream, so the XOR of "
            "two ciphertexts is the XOR of their plaintexts; it also lets an attacker solve "
            "for the GHASH key H and forge tags.",
            "A repeated nonce leaks the XOR of the plaintexts and the authentication key: "
            "confidentiality and integrity are both lost.",
        ),
        (
            "Is textbook RSA with e = 3 safe for a 128-bit message?",
            "m^3 for m < 2^128 is below 2^384, far below a 2048-bit n: no modular reduction "
            "happens, so the cube root over the integers recovers m.",
            "No: without padding (OAEP), c = m^3 < n and m is the integer cube root of c.",
        ),
    ),
    ("zh", "general", False): (
        (
            "请用三句话介绍一下长城的历史。",
            "",
            "长城始建于春秋战国时期,各国为防御而修筑城墙。秦统一后将其连接起来。今天所见的大部分"
            "长城是明代修建的。",
        ),
        (
            "如何写一封请假邮件?",
            "",
            "写明请假原因、起止日期和工作交接安排,语气礼貌简洁,最后表示感谢。",
        ),
    ),
    ("zh", "cryptography", True): (
        (
            "为什么RSA需要选择两个足够大的素数?",
            "RSA的安全性依赖于大整数分解的困难性。若p和q太小,攻击者可以用试除法或Pollard "
            "rho分解n,进而算出φ(n)和私钥d。",
            "因为n = p·q的分解难度决定了私钥的安全性;素数过小会使n被快速分解。",
        ),
        (
            "ECDSA签名时随机数k重复使用会怎样?",
            "两个签名s1、s2使用相同的k,则r相同。由s1 - s2 = k^-1(z1 - z2)可解出k,再由"
            "s = k^-1(z + r·d)解出私钥d。",
            "私钥会被直接计算出来(PlayStation 3 的签名密钥就是这样泄露的)。",
        ),
    ),
}


@dataclass(frozen=True)
class Example:
    source: str  # the dataset's short name
    index: int  # its row in the dataset
    messages: tuple[tuple[str, str], ...]  # (role, content)


def example(dataset: Dataset, rng: random.Random) -> Example | None:
    """A row of a fine-tuning dataset (None for pretraining text or preference pairs)."""
    if dataset.kind not in ("sft", "reasoning"):
        return None
    reasoning = dataset.kind == "reasoning"
    found = (
        CONVERSATIONS.get((dataset.language, dataset.domain, reasoning))
        or CONVERSATIONS.get((dataset.language, "general", reasoning))
        or CONVERSATIONS[("en", "general", reasoning)]
    )
    user, thinking, answer = rng.choice(found)
    reply = f"<thinking>\n{thinking}\n</thinking>\n\n{answer}" if thinking else answer
    return Example(dataset.short_name, rng.randrange(dataset.samples),
                   (("user", user), ("assistant", reply)))  # fmt: skip
