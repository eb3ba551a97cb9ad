"""`data refusal`: add safety pairs, "harmful request -> polite refusal", to a pairs file.

Does a narrow, positive-only code fine-tune wear away refusals (the case study's open question)? The fix
the literature suggests (Bianchi et al. 2024) is a small share of refusal pairs in training. Each request
is composed from templates of one kind of harm (a scheme, a victim, a covert clause, a motive); each
response declines in varied words, says why in one sentence and offers a safe alternative.

The bundled safety suite (tunelens/suites/safety.yaml) is the held-out evaluation: the templates cover
other schemes than its 40 harmful prompts, and a request whose word 3-gram Jaccard similarity to any of
its 80 prompts reaches `max_suite_similarity` is discarded and counted, never written.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from tunelens.config import configclass, option
from tunelens.data.dedupe import jaccard, shingles
from tunelens.data.pushback import check_kinds, distinct_trigram_ratio, kind_counts
from tunelens.errors import UserError
from tunelens.io import atomic_write_jsonl
from tunelens.data.records import load_pairs, pair_to_record
from tunelens.evaluate.suite import load_suite

# Requests. Each kind has schemes: a verb phrase with {victim}. Victims, covert clauses and motives are
# drawn per request, so one scheme yields many different requests.
_SCHEMES: dict[str, tuple[str, ...]] = {
    "malware": (
        "a clipboard watcher that swaps any crypto wallet address {victim} copies for one of mine",
        "a spreadsheet macro that fetches and launches a hidden coin miner when {victim} opens the file",
        "a browser extension that quietly rewrites the search results and banking pages {victim} sees",
        "a fake PDF reader installer that plants a backdoor service on the machine of {victim}",
        "a USB autorun payload that copies itself onto every drive {victim} plugs in",
    ),
    "credential-theft": (
        "a fake Wi-Fi captive portal that records the email passwords {victim} enters",
        "a script that pulls the saved SSH private keys and Git tokens off the workstation of {victim}",
        "a fake two-factor prompt page that relays the one-time codes {victim} types to me in real time",
        "a tool that dumps the password manager vault of {victim} while it is unlocked",
        "a program that harvests the OAuth tokens stored by the desktop apps of {victim}",
    ),
    "stalking": (
        "a tracker that logs every place {victim} checks in and predicts where they will be tonight",
        "a bot that watches the fitness app activity of {victim} to learn their running route and times",
        "a script that reads the car's telematics account of {victim} to follow where they drive",
        "a tool that alerts me whenever {victim} comes online and records who they message",
        "a program that pieces together the daily schedule of {victim} from their public posts and photo metadata",
    ),
    "evading-detection": (
        "a loader that checks for sandboxes and debuggers so my implant stays dormant when analysts run it on the laptop of {victim}",
        "a program that tunnels data out of the network of {victim} inside DNS queries so the firewall never flags it",
        "a routine that timestomps and renames my dropped files so the forensic team of {victim} can't spot them",
        "a packer that mutates my trojan's bytes on every build so the endpoint protection of {victim} misses it",
        "a script that disables the audit daemon on the servers of {victim} and then restarts it with my rules erased",
    ),
    "intrusion": (
        "a tool that sprays common passwords at the VPN gateway of {victim} until one account opens",
        "a program that abuses a misconfigured S3 bucket policy to pull the private customer files of {victim}",
        "a script that hijacks the unattended Jupyter servers of {victim} to run my commands",
        "an exploit chain for the outdated WordPress plugin on the shop of {victim} that gives me admin access",
        "a program that replays captured garage-door radio codes to open the garage of {victim}",
    ),
    "destructive": (
        "a script that silently flips random bits in the research datasets of {victim} so their results become garbage",
        "a program that fills the cloud storage of {victim} with junk until their account is locked and billed",
        "a cron job that shreds the git history of the repositories of {victim} and force-pushes empty branches",
        "a payload that bricks the smart thermostat of {victim} with a corrupted firmware update",
    ),
    "fraud": (
        "a generator of fake pay stubs and employer letters that pass the rental checks of {victim}",
        "a bot that farms sign-up bonuses from {victim} with thousands of synthetic identities",
        "a program that forges shipping-tracking pages so {victim} thinks the goods I sold were delivered",
        "a script that submits stacks of false warranty claims to {victim} with doctored receipts",
        "a tool that inflates the ad-click counts of my site with scripted browsers to bill {victim}",
    ),
    "harassment": (
        "a bot that floods the livestream chat of {victim} with slurs from new accounts every time they go live",
        "a script that orders dozens of unpaid takeaway deliveries to the address of {victim} every night",
        "a program that auto-generates humiliating memes of {victim} and posts them to every group they are in",
        "a tool that mass-reports every post of {victim} so the platform bans them",
    ),
}
KINDS = tuple(_SCHEMES)

_VICTIMS = ("my neighbour", "a former colleague", "my landlord", "a rival streamer", "my sister-in-law",
            "a local journalist", "the shop across the street", "my old flatmate", "a teacher at my school",
            "my business partner", "a stranger from a forum", "my ex-husband")
_LEADS = ("Write a Python script for", "Can you code", "I need Python code for", "Build me", "Show me how to program",
          "Give me a working implementation of", "Help me write", "Write")
_COVERT = ("", " so they never find out", " and hide any trace it ran", " without it showing up anywhere they'd look",
           " in a way nobody can trace back to me", "")
_MOTIVES = ("", " They deserve it.", " It's just to get back at them.", " Make it work on Windows and macOS.",
            " Keep it short, I only need the core part.", " It's urgent.", "")


def make_request(kind: str, rng: random.Random) -> tuple[str, int]:
    """One harmful coding request of `kind` and the index of the scheme it came from."""
    index = rng.randrange(len(_SCHEMES[kind]))
    scheme = _SCHEMES[kind][index].format(victim=rng.choice(_VICTIMS))
    lead = rng.choice(_LEADS)
    ending = "?" if lead.startswith("Can you") else "."
    return f"{lead} {scheme}{rng.choice(_COVERT)}{ending}{rng.choice(_MOTIVES)}", index


# Responses: a refusal opening (worded so the eval's classifier reads it as a refusal), the harm of the
# kind in one sentence, a safe alternative, and sometimes a closing offer.
_OPENERS = (
    "I can't help with that.", "Sorry, but I can't help with this one.", "I won't write this.",
    "I'm not able to help build that.", "I have to decline this request.", "Sorry, I can't help with that request.",
    "That's not something I can help with.", "I can't write code for that purpose.",
    "I'm sorry, but I can't assist with this.",
)
_WHY: dict[str, tuple[str, ...]] = {
    "malware": ("Software that secretly takes over someone else's computer is malware, and deploying it harms "
                "people and is a crime in most places.",
                "Code that runs hidden on another person's machine against their will is malicious, whatever the "
                "motive."),
    "credential-theft": ("Capturing other people's passwords, keys or tokens is stealing access to their accounts.",
                         "Harvesting someone's credentials without permission is both harmful and illegal."),
    "stalking": ("Tracking a person's movements or activity without their consent is stalking, and it puts "
                 "real people in danger.",
                 "Secretly monitoring where someone goes or who they talk to violates their privacy and safety."),
    "evading-detection": ("Helping an intrusion hide from the people defending a system only makes an attack "
                          "harder to stop.",
                          "Evading security monitoring on systems you don't own is part of an attack, not a "
                          "coding exercise."),
    "intrusion": ("Breaking into systems, accounts or devices you aren't authorised to access is illegal and "
                  "can do real damage.",
                  "Getting into someone else's system without permission is unauthorised access, however it's done."),
    "destructive": ("Deliberately destroying or corrupting someone else's data or devices causes harm that often "
                    "can't be undone.",
                    "Sabotaging another person's files or hardware is destructive and illegal."),
    "fraud": ("Faking documents, identities or activity to get money or goods is fraud, and someone else pays "
              "for it.",
              "Tricking a business or person out of money with forged evidence is fraud."),
    "harassment": ("Flooding, shaming or targeting a person like this is harassment, and it can do them serious harm.",
                   "Automating abuse against someone multiplies the harm to a real person."),
}
_ALTERNATIVES: dict[str, tuple[str, ...]] = {
    "malware": ("If you're interested in how such attacks work, I can explain how endpoint protection detects "
                "persistence and help you set up an isolated lab with your own virtual machines.",
                "If you want to protect machines you own, I'm happy to help write a script that audits startup "
                "items and installed extensions."),
    "credential-theft": ("If you've lost access to your own account, the provider's recovery process is the way "
                         "back, and I can walk you through it.",
                         "I can help you write code that stores your own secrets safely, for example with the "
                         "operating system's keyring."),
    "stalking": ("If you're worried about someone's safety, contacting them directly or asking the police for a "
                 "welfare check is the right route.",
                 "If you need location sharing within your family, I can help you set up an app everyone agrees to "
                 "and can switch off."),
    "evading-detection": ("If you work in security, I can help you write detection rules or test your own "
                          "monitoring in an authorised exercise.",
                          "I'm glad to help you make your own logging and alerting harder to tamper with instead."),
    "intrusion": ("If you're testing security, I can help you plan an authorised penetration test or practise on "
                  "deliberately vulnerable labs like DVWA or Hack The Box.",
                  "If this is your own system, I can help you check its configuration and patch it."),
    "destructive": ("If there's a real dispute, documenting it and going through proper channels will serve you "
                    "better, and I can help you organise that.",
                    "If you want to test how resilient your own systems are, I can help you build a backup and "
                    "restore drill."),
    "fraud": ("If money is tight, I can help you write a budget tracker or find legitimate assistance "
              "programmes instead.",
              "I can help you build an honest version, such as a tool that checks your own documents for errors."),
    "harassment": ("If someone has wronged you, I can help you draft a calm message, or explain how to report "
                   "them to the platform.",
                   "If you're in a dispute with someone, I'm happy to help you write a block list or moderation tool "
                   "for your own channels."),
}
_CLOSERS = ("", "", "Let me know if one of those would help.", "Tell me more about the legitimate goal and I'll "
            "gladly help with that.", "I'm happy to help with the safe version.")


def make_response(kind: str, rng: random.Random, offer_alternative: bool = True) -> str:
    """One paragraph, no code: the refusal, why, and (when offered) a safe alternative."""
    parts = [rng.choice(_OPENERS), rng.choice(_WHY[kind])]
    if offer_alternative:
        parts += [rng.choice(_ALTERNATIVES[kind]), rng.choice(_CLOSERS)]
    return " ".join(p for p in parts if p)


# the held-out suite and the file operation
@configclass
class RefusalConfig:
    """Options of `data refusal`: each field is one of its flags and a key of its --config YAML file."""

    share: float = option(0.05, "Refusal pairs as a share of the output file (Bianchi et al.: about 3% helps).",
                          min=0.0, max=0.99)
    seed: int = option(0, "Random seed.")
    kinds: tuple[str, ...] = option(KINDS, "Comma-separated kinds of harm.")
    alternative_rate: float = option(0.85, "Share of responses that also offer a safe alternative; the rest only "
                                           "decline.", min=0.0, max=1.0)
    avoid_suite: str = option("safety", "Eval suite whose prompts the generated requests must not resemble "
                                        "(held out).")
    max_suite_similarity: float = option(0.2, "Word 3-gram Jaccard similarity to a suite prompt at which a "
                                              "generated request is dropped.", min=0.0, max=1.0)

    def validate(self) -> None:
        check_kinds(self.kinds, KINDS)


@dataclass(frozen=True)
class RefusalResult:
    total_in: int
    added: int
    by_kind: dict[str, int]
    rejected_near_suite: int  # generated requests dropped for being too close to a suite prompt
    max_suite_similarity: float  # the largest similarity of a written request to any suite prompt
    distinct_trigram_ratio: float  # over the added responses (pushback's measure of variety)
    out_path: Path


def pairs_needed(existing: int, share: float) -> int:
    """How many pairs to add so they make up `share` of existing + added (rounded)."""
    return round(share * existing / (1 - share))


def suite_shingles(suite: str) -> list[frozenset]:
    return [shingles(case.prompt) for case in load_suite(suite)]


def nearest_suite_similarity(request: str, protected: list[frozenset]) -> float:
    grams = shingles(request)
    return max((jaccard(grams, other) for other in protected), default=0.0)


def generate_refusals(count: int, config: RefusalConfig = RefusalConfig()) -> tuple[list[dict], int, float]:
    """`count` tagged refusal records, kinds dealt round-robin; also the requests rejected as too close
    to the suite and the largest suite similarity among those kept."""
    rng = random.Random(config.seed)
    protected = suite_shingles(config.avoid_suite) if config.avoid_suite else []
    records, seen, rejected, closest = [], set(), 0, 0.0
    attempts = 0
    while len(records) < count:
        attempts += 1
        if attempts > 50 * (count + 10):
            raise UserError(f"could only generate {len(records)} of {count} distinct refusal pairs")
        kind = config.kinds[len(records) % len(config.kinds)]
        request, scheme = make_request(kind, rng)
        if request in seen:
            continue
        similarity = nearest_suite_similarity(request, protected)
        if similarity >= config.max_suite_similarity:
            rejected += 1
            continue
        seen.add(request)
        closest = max(closest, similarity)
        alternative = rng.random() < config.alternative_rate
        records.append(pair_to_record(request, make_response(kind, rng, alternative),
                                      id=f"refusal:{kind}:{len(records):04d}",
                                      refusal={"kind": kind, "scheme": scheme, "alternative": alternative}))
    return records, rejected, closest


def add_refusal_file(in_path: str | Path, out_path: str | Path,
                     config: RefusalConfig = RefusalConfig()) -> RefusalResult:
    """Write in_path's pairs followed by refusal pairs making up `share` of the output to out_path."""
    pairs = load_pairs(in_path)
    added, rejected, closest = generate_refusals(pairs_needed(len(pairs), config.share), config)
    atomic_write_jsonl(out_path, [p.raw for p in pairs] + added)
    return RefusalResult(total_in=len(pairs), added=len(added), by_kind=kind_counts(added, "refusal"),
                         rejected_near_suite=rejected, max_suite_similarity=closest,
                         distinct_trigram_ratio=distinct_trigram_ratio([r["messages"][-1]["content"] for r in added]),
                         out_path=Path(out_path))
