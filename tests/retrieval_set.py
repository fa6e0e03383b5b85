"""A small retrieval question set with known answers, shared by `bench/retrieval.py` and
`tests/test_retrieval_quality.py`.

Twelve short Markdown documents written for this set (a fictional company's travel and expense policies, two
HR policies, two product manuals, two recipes, a history note, a lab safety sheet, two server runbooks), in
pairs on neighbouring topics so that finding the right one is not trivial, and questions phrased as a user
would ask them, in other words than the documents use. Each question names the document that answers it and
a short answer string found verbatim in that document's text.

Scoring (the same for the benchmark and the test):
- a question is a *chunk-level hit* at k when one of the first k passages is from the right document and
  contains the answer string (case and runs of whitespace ignored);
- a *document-level hit* when one of the first k passages is from the right document;
- MRR is the mean of 1 / rank of the first chunk-level hit (0 when there is none in the list).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Doc:
    """A document of the set: `slug` names it in questions, `filename` is what is uploaded."""

    slug: str
    title: str
    text: str

    @property
    def filename(self) -> str:
        return f"{self.slug}.md"


@dataclass(frozen=True)
class Question:
    """A question, the slug of the document that answers it, and a short answer found in that document."""

    text: str
    doc: str
    answer: str


DOCS: tuple[Doc, ...] = (
    Doc(
        "travel-policy",
        "Business travel policy",
        """# Halden Instruments business travel policy

This policy applies to every employee of Halden Instruments who travels for work, including contractors whose
contract says so. It explains how trips are approved, booked and paid for.

## Approval

Every trip needs approval before anything is booked. Trips inside the country are approved by your line
manager; trips abroad also need the approval of a director. Requests go through TripDesk, our booking portal,
at least ten working days before departure. Trips booked outside TripDesk are not reimbursed unless the travel
team agreed in writing.

## Getting there

Take the train when the journey by rail takes less than four hours; it is usually cheaper once transfers are
counted and it is better for our carbon budget. Flights are booked in economy class. Business class is allowed
only for flights with a scheduled duration of more than eight hours, and never for the return leg of a trip
shorter than three nights. If you drive your own car, the company pays 0.30 euros per kilometre, and parking at
the airport is reimbursed for up to five days.

## Staying there

Hotels are booked through TripDesk within the nightly cap: 160 euros in most cities, 240 euros in London,
Paris, Zurich and New York. Breakfast is included in the cap. If you stay with friends or family instead, you
may claim a flat 30 euros per night for a gift.

## Daily allowance

For each full day away you receive a daily allowance of 45 euros for meals and local transport; on the day you
leave and the day you come back it is half that. Meals paid by a customer or at a conference are deducted from
the allowance.

## Safety and insurance

All travellers are covered by the company's travel insurance with Aster Mutual; the policy number is printed
on the back of your badge. Before a trip to a country on the travel team's watch list, register your itinerary
with the security desk. In an emergency abroad, call the 24-hour assistance line on +44 20 7946 0321.
""",
    ),
    Doc(
        "expenses-policy",
        "Expenses and corporate card",
        """# Halden Instruments expenses and corporate card

This page explains how to claim back money you spent for the company and how to use a corporate card. For
trips, read it together with the business travel policy.

## Claiming expenses

Submit your expense report in Ledgerly by the fifth working day of the following month. Each line needs a
receipt photographed or scanned in full, showing the date, the supplier and the VAT amount. Claims older than
ninety days are refused by the finance team, whatever the reason. If a receipt is lost, fill in a
missing-receipt declaration; this is accepted for amounts of up to 25 euros, no more than three times a year.

## Corporate cards

Employees who travel more than six times a year may ask for a corporate card. The standard monthly limit is
3,000 euros; your director can raise it to 8,000 euros for a project. The card is for business spending only:
personal purchases, even if repaid, lead to the card being withdrawn. Cash withdrawals with the card are
allowed abroad only, up to 200 euros per trip.

## Entertaining clients

Client meals are reimbursed up to 70 euros per person, drinks included, when the names of the guests and the
business purpose are written on the claim. Alcohol is never reimbursed when only employees are present. Gifts
to clients must not exceed 50 euros in value and are recorded in the gifts register.

## Equipment for working from home

Every employee who works from home at least two days a week may claim a home-office allowance of 400 euros
every three years, for a chair, a desk, a screen or a headset. Keep the receipts: the equipment remains yours,
but the claim is checked like any other expense.
""",
    ),
    Doc(
        "annual-leave",
        "Annual leave, sickness and other absence",
        """# Annual leave, sickness and other absence

## Holiday entitlement

Full-time employees have 27 days of paid annual leave each calendar year, in addition to public holidays.
Part-time employees receive the same entitlement in proportion to their working days. New starters accrue
leave at 2.25 days per full month worked in their first year.

## Booking holiday

Book holiday in PeopleHub. Absences of more than three consecutive days must be requested at least two weeks
in advance, and your manager answers within five working days. During the year-end freeze from 15 December to
5 January, at most half of a team may be away at the same time.

## Carrying days over

Up to five unused days may be carried over into the next year; they must be taken by 31 March or they are
lost. Days you could not take because of long sickness or parental leave are carried over in full.

## Sickness

Tell your manager before 10:00 on the first day you are ill. You may self-certify up to seven calendar days;
from the eighth day, a doctor's note is required. Sick pay is full salary for the first twelve weeks in any
rolling year.

## Other absence

Bereavement leave is five paid days for a partner, child, parent or sibling, and two days for other
relatives. Jury service is paid in full. Employees may take two paid volunteering days a year with a
registered charity.
""",
    ),
    Doc(
        "parental-leave",
        "Parental leave",
        """# Parental leave

## Birth parents

An employee who gives birth receives 26 weeks of maternity leave on full pay, followed by up to 13 further
weeks unpaid. Leave can start at any time from eleven weeks before the expected week of childbirth.

## Partners

The partner of a birth parent, whatever their gender, receives four weeks of partner leave on full pay, to be
taken in the first six months after the birth. It may be taken in blocks of at least one week.

## Adoption and surrogacy

Adopters and intended parents through surrogacy have the same entitlements as birth parents and partners; the
primary carer takes the 26 weeks, the other parent the four weeks. Leave starts on the day the child is placed
with the family.

## Telling us

Tell HR through PeopleHub at least fifteen weeks before the expected week of childbirth, and attach the MATB1
certificate or the matching certificate from the adoption agency. HR confirms your dates within 28 days.

## While you are away and coming back

You may work up to ten keeping-in-touch days during leave without ending it; each is paid at your normal
daily rate on top of your leave pay. On your return, you may work half your usual hours for the first four
weeks on full pay, which we call a phased return. Annual leave keeps accruing during parental leave.
""",
    ),
    Doc(
        "espresso-manual",
        "Brevetto Duo espresso machine manual",
        """# Brevetto Duo espresso machine: user manual

## Before first use

Rinse the water tank and fill it with fresh cold water up to the MAX mark; the tank holds 1.8 litres. Switch
the machine on with the button on the right side and wait until the cup light stops blinking, about 45
seconds. Run two empty cycles to flush the system.

## Making coffee

Use 18 grams of ground coffee for a double shot. The built-in grinder has twelve settings: 1 is the finest and
12 the coarsest. Start at 6 and go finer if the shot runs faster than 25 seconds. The pump works at 15 bar;
the pressure gauge should stay in the grey zone while the shot runs.

## Steaming milk

Turn the steam knob anticlockwise. Keep the tip of the wand just under the surface of the milk until it has
doubled in volume, then lower it to heat the milk to around 65 degrees. Purge the wand and wipe it with a damp
cloth after every use, or dried milk will block the holes.

## Descaling

Descale the machine every three months, or sooner when the orange drop light comes on. Dissolve 30 grams of
citric acid in one litre of water, pour it into the tank and hold the hot water and steam buttons together for
five seconds to start the descaling program. It takes about 25 minutes; rinse the tank and run one full tank
of clean water afterwards.

## Error codes

E01: the water tank is empty or not seated. E02: the grinder is blocked; empty the bean hopper and remove the
obstruction. E04: the boiler did not reach temperature; switch off, wait ten minutes and switch on again, and
call service if it comes back. The machine turns itself off after 20 minutes without use.

## Warranty

The machine is covered for two years from purchase. Damage caused by limescale is not covered when the
machine has not been descaled as described above.
""",
    ),
    Doc(
        "vacuum-manual",
        "Kestrel R5 robot vacuum guide",
        """# Kestrel R5 robot vacuum: user guide

## Charging

Place the dock against a wall with half a metre of free space on each side. The first full charge takes about
four hours. The 5,200 mAh battery runs for up to 150 minutes on the Eco suction level and about 90 minutes on
Max. When the battery drops below 15 percent, the robot returns to the dock by itself and resumes cleaning
once it is charged.

## Mapping and no-go zones

During its first run the robot builds a map of your home. In the Kestrel app, draw no-go zones and virtual
walls to keep it away from pet bowls, cables or rugs with tassels. Up to four floor maps can be saved, one per
storey.

## Maintenance

Empty the dust bin after every run. Remove hair from the main brush once a week using the cutting tool stored
under the lid. Replace the HEPA filter every two months and the side brushes every six months. Wipe the cliff
sensors under the robot with a dry cloth, never with water.

## Lights and error codes

A slowly pulsing white light means cleaning; a blinking red light means the robot is stuck. E03: a wheel is
jammed; lift the robot and check the wheels for hair. E04: the cliff sensors are dirty; clean them and
restart. E09: the battery is too hot; let the robot cool for one hour.

## Warranty

The robot has a warranty of 24 months; the battery, brushes and filters are consumables covered for six
months.
""",
    ),
    Doc(
        "sourdough",
        "Rye and wheat sourdough loaf",
        """# Rye and wheat sourdough loaf

Makes one loaf of about 900 grams. Plan two days: the dough ferments overnight.

## Ingredients

- 100 g active sourdough starter, fed 8 to 12 hours earlier
- 350 g strong white bread flour
- 150 g wholemeal rye flour
- 360 g water at about 28 °C
- 10 g fine sea salt

## Method

Mix the flours with 330 g of the water and leave for 45 minutes; this rest, the autolyse, makes the dough
easier to stretch. Add the starter, the salt and the remaining water and squeeze them through the dough with
wet hands.

Over the next two hours, do four sets of stretch and folds, 30 minutes apart. Then leave the dough covered
until it has risen by about half, usually another two to three hours depending on the warmth of the kitchen.

Shape the dough into a tight round, place it seam side up in a floured banneton and leave it in the fridge
for 12 to 16 hours. The cold slows the yeast and deepens the sour flavour.

## Baking

Heat the oven with a cast-iron pot inside to 250 °C for 45 minutes. Turn the dough out on baking paper, score
the top with a razor blade, and bake in the covered pot for 20 minutes. Remove the lid, lower the oven to
220 °C and bake for 25 minutes more, until the crust is deep brown and the base sounds hollow when tapped. Let
the loaf cool for at least two hours before slicing.
""",
    ),
    Doc(
        "pancakes",
        "Buttermilk pancakes",
        """# Buttermilk pancakes

Serves four, about twelve pancakes. Ready in 30 minutes.

## Ingredients

- 250 g plain flour
- 2 teaspoons baking powder and half a teaspoon of bicarbonate of soda
- 2 tablespoons caster sugar and a pinch of salt
- 2 eggs
- 400 ml buttermilk
- 40 g melted butter, plus a little for the pan

## Method

Whisk the dry ingredients in a large bowl. In a jug, beat the eggs with the buttermilk and the melted butter.
Pour the wet mix into the dry and stir with a fork only until no dry flour is visible: a few lumps are fine,
and overmixing makes the pancakes tough.

Let the batter rest for 10 minutes while the pan heats; the bicarbonate reacts with the buttermilk and the
batter thickens and bubbles.

Heat a heavy frying pan over a medium heat and brush it with butter. Pour about 60 ml of batter per pancake.
Cook until bubbles appear on the surface and the edges look set, about two minutes, then flip and cook for one
minute more.

Keep the cooked pancakes warm in a low oven at 90 °C while you make the rest. Serve with maple syrup and
berries.

## No buttermilk?

Stir one tablespoon of lemon juice into 400 ml of milk and leave it for five minutes; it curdles slightly and
does the same job.
""",
    ),
    Doc(
        "lighthouse-history",
        "A short history of the Varden Point lighthouse",
        """# A short history of the Varden Point lighthouse

The lighthouse at Varden Point was built in 1867, after the wreck of the steamer Margarethe on the reef below
the headland cost forty-one lives the winter before. The tower, 32 metres of granite quarried on the island,
was designed by the engineer Tobias Lindqvist.

Its first keeper, Elias Brandt, lived in the cottage at the foot of the tower with his wife and six children
and kept the light for thirty-four years. The keepers' logbooks, kept without a break from 1867 to 1974, are
held today in the county archive.

In 1903 a storm smashed the lantern room and put the light out for three nights; it was rebuilt with a
second-order Fresnel lens made in Paris, which still turns in the tower. The lamp burned paraffin until 1921,
when it was converted to acetylene gas, and it was electrified in 1952.

During the Second World War the light was dimmed and shown only when convoys were expected, on orders from
the navy. In 1974 the light was automated and the last keeper, Ingrid Sølvberg, left the point.

Since 1998 the keeper's cottage has been a museum run by volunteers of the Varden Point Society. It is open
daily from May to September; visitors can climb the 148 steps to the gallery in good weather.
""",
    ),
    Doc(
        "lab-safety",
        "Laboratory 2B safety sheet",
        """# Laboratory 2B safety sheet

Read this sheet before your first session in Laboratory 2B and sign the register at the door. It does not
replace the risk assessment of each experiment.

## Protective equipment

Safety glasses and a buttoned lab coat are worn at all times beyond the yellow line, including when you are
only writing up. Nitrile gloves protect against most solvents; for concentrated acids use the thick neoprene
gloves from the cabinet by the fume hoods. Long hair is tied back and open shoes are not allowed.

## Fume hoods

Work with volatile or toxic substances only inside a fume hood, with the sash below the 40 cm mark. If the
airflow alarm sounds, stop work, close the sash and report it to the lab manager.

## Spills and exposure

For splashes in the eye, use the eyewash station next to the sink and rinse for at least 15 minutes, holding
the eyelids open, then seek medical help. For skin contact with hydrofluoric acid, rinse with water and apply
calcium gluconate gel from the red first-aid box immediately. Small solvent spills are absorbed with the spill
kit under the window; for anything over one litre, leave the room and call extension 4444.

## Waste

Halogenated solvents go in the green cans and non-halogenated solvents in the red cans; never mix them. Broken
glass goes in the cardboard glass bin, never in the general waste. Label every waste container with its
contents and the date.

## Working alone

Nobody works alone in the laboratory. Outside 08:00 to 18:00, work only with the written permission of the lab
manager and with a second person present.
""",
    ),
    Doc(
        "db-failover-runbook",
        "Runbook: PostgreSQL primary failover",
        """# Runbook: PostgreSQL primary failover

Owner: platform team. Use this runbook when the primary database of the orders cluster is down or cannot be
recovered within 10 minutes.

## Symptoms

The alert OrdersDBPrimaryDown fires when the primary has not answered health checks for 60 seconds.
Applications log connection refused errors against db-primary.internal and the orders API returns 503.

## Before you promote

Check the replicas with the cluster status command `pgctl status orders`. Choose the replica with the smallest
replication lag; never promote one that is more than 30 seconds behind without approval from the incident
commander, because orders written in that window would be lost. Make sure the old primary is really stopped:
fence it by shutting down its VM from the cloud console, so that two primaries can never accept writes.

## Promote

Run `pg_ctl promote -D /var/lib/postgresql/16/main` on the chosen replica. Then point the DNS record
db-primary.internal at the new primary; the record has a TTL of 60 seconds, so applications reconnect within
about a minute. Restart the PgBouncer pods so that they drop cached connections.

## Afterwards

Rebuild the old primary as a replica with `pg_basebackup` from the new primary; do not try to rejoin it
directly. Open a post-incident review within two working days, and attach the replication lag graph from the
hour before the failure.
""",
    ),
    Doc(
        "web-deploy-runbook",
        "Runbook: deploying and rolling back the web tier",
        """# Runbook: deploying and rolling back the web tier

Owner: platform team. Use this runbook for every release of the storefront web application.

## Before the release

Releases happen Monday to Thursday between 09:00 and 16:00. There is a release freeze from Friday 15:00 until
Monday morning, and during peak sales weeks announced by the commerce team. Check that the build is green in
CI and that the change has an approved ticket.

## Deploying

Deploy with `deployctl release storefront --version <tag>`. The release first goes to a canary group serving
5 percent of traffic for 15 minutes. Watch the storefront dashboard: if the error rate of the canary stays
under 1 percent and the p95 latency does not grow by more than 20 percent, `deployctl` continues to the rest
of the fleet in batches of 25 percent.

## Rolling back

If the error rate goes over 1 percent at any point, roll back at once with `deployctl rollback storefront`;
the previous version is kept warm for 24 hours, so rolling back takes under two minutes. Database migrations
are never rolled back automatically: releases that change the schema must be backward compatible with the
previous version.

## Communication

Announce the start and end of each release in the #releases channel. If you roll back, open an incident
ticket and tell the on-call engineer of the platform team.
""",
    ),
)

QUESTIONS: tuple[Question, ...] = (
    # travel-policy
    Question(
        "How long does a flight have to be before I may sit in business class?",
        "travel-policy",
        "more than eight hours",
    ),
    Question("What is the most I can spend on a hotel room in Paris for one night?", "travel-policy", "240 euros"),
    Question(
        "How much do I get back for using my private car on a work trip?", "travel-policy", "0.30 euros per kilometre"
    ),
    Question("Who has to sign off on a work trip to another country?", "travel-policy", "approval of a director"),
    # expenses-policy
    Question(
        "I lost the receipt for a taxi ride; up to what amount can I still claim it?",
        "expenses-policy",
        "up to 25 euros",
    ),
    Question("What is the spending limit on a company credit card each month?", "expenses-policy", "3,000 euros"),
    Question("What is the deadline for handing in last month's expense claim?", "expenses-policy", "fifth working day"),
    Question("Can I get money for a desk chair since I work remotely?", "expenses-policy", "400 euros"),
    # annual-leave
    Question("How many vacation days do I get per year if I work full time?", "annual-leave", "27 days"),
    Question("If I don't use all my holidays, can I keep some for next year?", "annual-leave", "five unused days"),
    Question("When do I need a medical certificate for being off ill?", "annual-leave", "eighth day"),
    Question("How much time off do I get when my mother dies?", "annual-leave", "five paid days"),
    # parental-leave
    Question("How long is the fully paid leave for the father after a baby is born?", "parental-leave", "four weeks"),
    Question("How much notice must I give before going on maternity leave?", "parental-leave", "fifteen weeks"),
    Question(
        "Can I come back on reduced hours at first after having a baby?", "parental-leave", "half your usual hours"
    ),
    Question("When does time off begin for parents who adopt a child?", "parental-leave", "placed with the family"),
    # espresso-manual
    Question("How do I remove limescale from my coffee maker?", "espresso-manual", "citric acid"),
    Question("Which grind number should I begin with?", "espresso-manual", "Start at 6"),
    Question(
        "My coffee machine shows E04, what is wrong with it?", "espresso-manual", "boiler did not reach temperature"
    ),
    Question("How much water fits in the reservoir of the coffee machine?", "espresso-manual", "1.8 litres"),
    # vacuum-manual
    Question("How often should the filter of the robot cleaner be changed?", "vacuum-manual", "every two months"),
    Question("How long does the robot vacuum run on one charge in its quiet mode?", "vacuum-manual", "150 minutes"),
    Question("The vacuum's light is flashing red; what does that mean?", "vacuum-manual", "stuck"),
    Question("How do I stop the robot from going near my dog's food dish?", "vacuum-manual", "no-go zones"),
    # sourdough
    Question("How long should the bread dough sit in the fridge overnight?", "sourdough", "12 to 16 hours"),
    Question("How hot should I preheat the oven for the loaf?", "sourdough", "250 °C"),
    Question("Why let the flour and water rest before adding the starter?", "sourdough", "easier to stretch"),
    Question("How much rye goes into the bread?", "sourdough", "150 g wholemeal rye flour"),
    # pancakes
    Question("What can I use if I have no buttermilk for the pancakes?", "pancakes", "lemon juice"),
    Question("When is it time to turn a pancake over?", "pancakes", "bubbles appear on the surface"),
    Question("Why shouldn't I whisk the pancake batter too much?", "pancakes", "makes the pancakes tough"),
    Question("How do I keep the first pancakes hot while cooking the others?", "pancakes", "low oven at 90 °C"),
    # lighthouse-history
    Question(
        "When did people stop living at the lighthouse to run the light?",
        "lighthouse-history",
        "In 1974 the light was automated",
    ),
    Question("Which shipwreck led to the lighthouse being built?", "lighthouse-history", "Margarethe"),
    Question("What fuel did the lighthouse lamp burn at first?", "lighthouse-history", "paraffin"),
    Question("Can tourists visit the old lighthouse, and in which months?", "lighthouse-history", "May to September"),
    # lab-safety
    Question("What should I do if a chemical splashes into my eyes?", "lab-safety", "15 minutes"),
    Question("Where do I throw away chlorinated solvent waste?", "lab-safety", "green cans"),
    Question("I got HF on my hand in the lab; what do I put on it?", "lab-safety", "calcium gluconate gel"),
    Question("Can I do experiments in the lab late in the evening by myself?", "lab-safety", "Nobody works alone"),
    # db-failover-runbook
    Question(
        "Which standby should be picked when the main database server dies?",
        "db-failover-runbook",
        "smallest replication lag",
    ),
    Question("How do I make sure the broken database cannot keep taking writes?", "db-failover-runbook", "fence it"),
    Question(
        "How long until the apps find the new database after a switchover?", "db-failover-runbook", "TTL of 60 seconds"
    ),
    Question(
        "Can the crashed database server rejoin straight away after it is fixed?",
        "db-failover-runbook",
        "pg_basebackup",
    ),
    # web-deploy-runbook
    Question("Am I allowed to ship a website release on a Friday afternoon?", "web-deploy-runbook", "Friday 15:00"),
    Question("What share of visitors sees a new website version first?", "web-deploy-runbook", "5 percent of traffic"),
    Question("How do I undo a bad release of the shop website?", "web-deploy-runbook", "deployctl rollback storefront"),
    Question(
        "What error level should make me go back to the previous version?", "web-deploy-runbook", "over 1 percent"
    ),
)

DOCS_BY_SLUG = {doc.slug: doc for doc in DOCS}


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def contains_answer(passage: str, answer: str) -> bool:
    """Whether `passage` contains `answer`, ignoring case and runs of whitespace (line breaks included)."""
    return _norm(answer) in _norm(passage)


@dataclass(frozen=True)
class Scores:
    """Figures for one ranked list per question, at cut-off `k`: fractions of questions in [0, 1]."""

    k: int
    questions: int
    recall_chunk: float  # a passage from the right document containing the answer in the first k
    recall_document: float  # a passage from the right document in the first k
    mrr: float  # mean of 1 / rank of the first chunk-level hit, 0 when none in the first k
    misses: tuple[str, ...]  # questions without a chunk-level hit


def score(ranked: Sequence[Sequence[tuple[str, str]]], questions: Sequence[Question] = QUESTIONS, k: int = 5) -> Scores:
    """Score one ranked list of `(document slug, passage text)` per question (in the order of `questions`)."""
    chunk_hits = doc_hits = 0
    reciprocal = 0.0
    misses: list[str] = []
    for question, passages in zip(questions, ranked, strict=True):
        top = list(passages)[:k]
        first = next(
            (
                rank
                for rank, (slug, text) in enumerate(top, 1)
                if slug == question.doc and contains_answer(text, question.answer)
            ),
            None,
        )
        if first is not None:
            chunk_hits += 1
            reciprocal += 1.0 / first
        else:
            misses.append(question.text)
        doc_hits += any(slug == question.doc for slug, _ in top)
    n = len(questions)
    return Scores(k, n, chunk_hits / n, doc_hits / n, reciprocal / n, tuple(misses))
