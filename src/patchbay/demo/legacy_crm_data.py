"""The reference data the legacy CRM generator draws from: person names per culture, company-name
templates and words per language, cities, phone formats and legal forms per country.

Only tables live here; `legacy_crm` holds the generator. Changing any entry changes the generated
database for every seed (tests/unit/test_legacy_crm.py pins the default build's rows).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

# The word lists below are kept hand-wrapped so they stay readable as tables.
# fmt: off


class Culture(NamedTuple):
    first: tuple[str, ...]
    last: tuple[str, ...]


CULTURES: Mapping[str, Culture] = {
    "german": Culture(
        first=(
            "Anna", "Lena", "Julia", "Katharina", "Sabine", "Petra", "Claudia",
            "Monika", "Laura", "Sophie", "Birgit", "Heike", "Ute", "Jürgen",
            "Thomas", "Michael", "Stefan", "Andreas", "Markus", "Jan", "Lukas",
            "Felix", "Matthias", "Klaus", "Tobias", "Sebastian", "Christian",
            "Uwe", "Jörg", "Björn",
        ),
        last=(
            "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer",
            "Wagner", "Becker", "Schulz", "Hoffmann", "Hartmann", "Koch",
            "Richter", "Klein", "Wolf", "Schröder", "Neumann", "Schwarz",
            "Zimmermann", "Braun", "Krüger", "Lange", "Werner", "Krause",
            "Lehmann", "Köhler", "Maier", "Huber", "Weiß", "Gruber", "Brunner",
            "Steiner", "Moser", "Keller", "Baumann", "Vogel", "Frank", "Berger",
        ),
    ),
    "english": Culture(
        first=(
            "James", "John", "Robert", "Michael", "William", "David", "Mary",
            "Patricia", "Jennifer", "Linda", "Elizabeth", "Sarah", "Emily",
            "Jessica", "Daniel", "Matthew", "Christopher", "Olivia", "Emma",
            "Oliver", "Harry", "George", "Amelia", "Charlotte", "Jack", "Megan",
            "Ryan", "Tyler", "Rachel", "Kevin",
        ),
        last=(
            "Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis",
            "Wilson", "Anderson", "Taylor", "Thomas", "Moore", "Jackson",
            "Martin", "Thompson", "White", "Harris", "Clark", "Lewis", "Walker",
            "Hall", "Young", "Evans", "Roberts", "Wright", "Hughes", "O'Brien",
            "McDonald", "Campbell", "Murphy", "Reed", "Bennett",
        ),
    ),
    "french": Culture(
        first=(
            "Jean", "Pierre", "Michel", "Philippe", "Nicolas", "François",
            "Julien", "Antoine", "Camille", "Marie", "Nathalie", "Isabelle",
            "Sophie", "Élodie", "Céline", "Chloé", "Léa", "Manon", "Hélène",
            "Stéphane", "Sébastien", "Thierry", "Aurélie", "Mathieu", "Benoît",
        ),
        last=(
            "Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard",
            "Petit", "Durand", "Leroy", "Moreau", "Simon", "Laurent", "Lefèvre",
            "Michel", "Garcia", "Bertrand", "Roux", "Vincent", "Fournier",
            "Morel", "Girard", "André", "Mercier", "Dupont", "Lambert",
            "Bonnet", "Faure", "Rousseau", "Chevalier", "Gauthier",
        ),
    ),
    "dutch": Culture(
        first=(
            "Daan", "Sem", "Lucas", "Levi", "Bram", "Jeroen", "Pieter", "Sander",
            "Joost", "Maarten", "Sanne", "Fleur", "Anouk", "Lotte", "Femke",
            "Eva", "Iris", "Marieke", "Ingrid", "Willem", "Hendrik", "Roel",
            "Thijs", "Noor", "Esther",
        ),
        last=(
            "de Jong", "Jansen", "de Vries", "van den Berg", "van Dijk",
            "Bakker", "Janssen", "Visser", "Smit", "Meijer", "de Boer",
            "Mulder", "de Groot", "Bos", "Vos", "Peters", "Hendriks",
            "van Leeuwen", "Dekker", "Brouwer", "de Wit", "Dijkstra", "Smits",
            "de Graaf", "van der Meer",
        ),
    ),
    "turkish": Culture(
        first=(
            "Mehmet", "Ahmet", "Mustafa", "Ali", "Emre", "Can", "Burak", "Ayşe",
            "Fatma", "Elif", "Zeynep", "Merve", "Özlem", "Deniz", "Selin",
        ),
        last=(
            # Turkish dotless i is intended, not a look-alike typo.
            "Yılmaz", "Kaya", "Demir", "Şahin", "Çelik", "Yıldız", "Aydın",  # noqa: RUF001
            "Öztürk", "Arslan", "Doğan", "Koç", "Kurt",
        ),
    ),
    "polish": Culture(
        first=(
            "Piotr", "Krzysztof", "Tomasz", "Paweł", "Marek", "Agnieszka",
            "Katarzyna", "Małgorzata", "Anna", "Magdalena",
        ),
        last=(
            "Nowak", "Kowalski", "Wiśniewski", "Wójcik", "Kowalczyk",
            "Kamiński", "Lewandowski", "Zieliński", "Szymański", "Woźniak",
        ),
    ),
    "italian": Culture(
        first=(
            "Marco", "Giuseppe", "Luca", "Alessandro", "Francesca", "Giulia",
            "Chiara", "Matteo", "Valentina", "Davide",
        ),
        last=(
            "Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano",
            "Colombo", "Ricci", "Marino", "Greco",
        ),
    ),
    "spanish": Culture(
        first=(
            "Carlos", "José", "Javier", "Lucía", "María", "Carmen", "Diego",
            "Sofía", "Alejandro", "Isabel",
        ),
        last=(
            "García", "Fernández", "González", "Rodríguez", "López", "Martínez",
            "Sánchez", "Pérez", "Gómez", "Díaz",
        ),
    ),
    "south_asian": Culture(
        first=(
            "Priya", "Rahul", "Amit", "Anjali", "Vikram", "Deepak", "Sunita",
            "Arjun", "Neha", "Rohan",
        ),
        last=(
            "Sharma", "Patel", "Singh", "Gupta", "Kumar", "Reddy", "Iyer",
            "Nair", "Mehta", "Desai",
        ),
    ),
    "chinese": Culture(
        first=("Wei", "Jing", "Li Na", "Hao", "Xiu Ying", "Jun", "Mei", "Yan"),
        last=("Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Huang", "Zhao"),
    ),
    "japanese": Culture(
        first=("Hiroshi", "Yuki", "Kenji", "Akiko", "Takeshi", "Naomi", "Haruto"),
        last=("Tanaka", "Suzuki", "Sato", "Takahashi", "Watanabe", "Ito"),
    ),
}


class Language(NamedTuple):
    culture: str
    private_templates: tuple[str, ...]
    edu_templates: tuple[str, ...]
    gov_templates: tuple[str, ...]
    coined: tuple[str, ...]
    departments: tuple[str, ...]
    sectors: Mapping[str, tuple[str, ...]]
    titles: tuple[str, ...]


# Template fields: {s}/{s2} surnames, {c} coined brand, {w} sector word,
# {x} legal form, {city}, {d} public-sector department.
LANGUAGES: Mapping[str, Language] = {
    "de": Language(
        culture="german",
        private_templates=(
            "{s} {w} {x}", "{s} {w} {x}", "{s} & {s2} {x}", "{c} {w} {x}",
            "{c}-{w} {x}", "{s} {w}",
        ),
        edu_templates=(
            "Volkshochschule {city}", "Hochschule {c}", "{s} Akademie {x}",
            "Sprachschule {c}", "Bildungszentrum {c} {x}",
        ),
        gov_templates=(
            "Stadt {city} - Referat für {d}", "Amt für {d} {city}",
            "Stadtwerke {city}", "Landkreis {c} - Fachbereich {d}",
        ),
        coined=(
            "Nordwind", "Rheintal", "Alpenblick", "Isartal", "Elbtal",
            "Schwarzwald", "Bergland", "Sonnenhof", "Lindenhof", "Adler",
            "Falkenstein", "Weitblick", "Lichtblick", "Mainau", "Taunus",
        ),
        departments=(
            "Stadtentwicklung", "Umwelt", "Digitalisierung", "Schule und Bildung",
            "Verkehr", "Soziales", "Bauwesen", "Finanzen",
        ),
        sectors={
            "MFG": (
                "Maschinenbau", "Metallverarbeitung", "Kunststofftechnik",
                "Antriebstechnik", "Präzisionsteile", "Anlagenbau",
            ),
            "FIN": (
                "Finanzberatung", "Vermögensverwaltung", "Versicherungsmakler",
                "Treuhand", "Kapitalpartner",
            ),
            "HLT": (
                "Medizintechnik", "Pflegedienst", "Praxisbedarf",
                "Labordiagnostik", "Orthopädietechnik",
            ),
            "RET": (
                "Logistik", "Handel", "Versandhandel", "Einzelhandel",
                "Großhandel", "Baumarkt",
            ),
            "TEC": (
                "Software", "IT-Systeme", "Datentechnik", "Digital",
                "Netzwerktechnik", "Informatik",
            ),
        },
        titles=(
            "Geschäftsführung", "Leitung Einkauf", "IT-Leitung", "Vertriebsleitung",
            "Projektleitung", "Sachbearbeitung Buchhaltung", "Prokurist",
            "Assistenz der Geschäftsführung", "Teamleitung Logistik",
            "Personalreferentin", "Controller", "Leitung Marketing",
        ),
    ),
    "en": Language(
        culture="english",
        private_templates=(
            "{c} {w} {x}", "{c} {w} {x}", "{s} {w} {x}", "{s} & {s2} {x}",
            "{c} {w}", "{s} {w} Group",
        ),
        edu_templates=(
            "{city} Community College", "{c} Academy", "{s} Learning Center",
            "{c} School of Business", "{city} Institute of Technology",
        ),
        gov_templates=(
            "City of {city} - {d}", "{city} County {d}",
            "Department of {d}, {city}",
        ),
        coined=(
            "Blue Ridge", "Silver Creek", "Red Oak", "Granite Peak", "Lakeside",
            "Pioneer", "Summit", "Evergreen", "Iron Bridge", "Northstar",
            "Cedar Point", "Harborview", "Keystone", "Bright Path", "Clearwater",
            "Oakfield", "Redwood", "Stonegate", "Riverbend", "Highland",
        ),
        departments=(
            "Public Works", "Parks and Recreation", "IT Services", "Procurement",
            "Transportation", "Housing", "Finance", "Education",
        ),
        sectors={
            "MFG": (
                "Manufacturing", "Industries", "Precision Tools", "Fabrication",
                "Components", "Machine Works",
            ),
            "FIN": (
                "Capital", "Financial", "Partners", "Wealth Management",
                "Insurance Brokers", "Advisors",
            ),
            "HLT": (
                "Health", "Medical Devices", "Care Services", "Diagnostics",
                "Pharma", "Clinics",
            ),
            "RET": ("Retail", "Stores", "Trading", "Outfitters", "Supply", "Logistics"),
            "TEC": ("Analytics", "Software", "Systems", "Labs", "Networks", "Data"),
        },
        titles=(
            "CEO", "CFO", "CTO", "Head of Procurement", "Purchasing Manager",
            "IT Manager", "Sales Director", "Office Manager", "Operations Manager",
            "Account Executive", "Software Engineer", "Project Manager",
            "HR Business Partner", "Marketing Manager", "Controller",
            "Executive Assistant",
        ),
    ),
    "fr": Language(
        culture="french",
        private_templates=(
            "{s} {w} {x}", "{s} {w} {x}", "Groupe {s}", "{c} {w} {x}",
            "Établissements {s}", "{s} & {s2} {x}",
        ),
        edu_templates=(
            "Lycée {s}", "École {c}", "Institut {c} de Formation",
            "Université de {city}",
        ),
        gov_templates=("Mairie de {city} - {d}", "Communauté de communes {c} - {d}"),
        coined=(
            "Horizon", "Belle Rive", "Mont Blanc", "Atlantique", "Lumière",
            "Les Tilleuls", "Beauséjour", "Val de Loire", "Provence", "Azur",
        ),
        departments=(
            "Urbanisme", "Voirie", "Services Numériques", "Affaires Scolaires",
            "Environnement", "Finances",
        ),
        sectors={
            "MFG": ("Mécanique", "Industrie", "Usinage", "Métallurgie"),
            "FIN": ("Finance", "Conseil Patrimonial", "Assurances", "Gestion"),
            "HLT": ("Santé", "Médical", "Pharma", "Soins"),
            "RET": ("Distribution", "Commerce", "Négoce", "Logistique"),
            "TEC": ("Informatique", "Logiciels", "Numérique", "Data"),
        },
        titles=(
            "Directeur général", "Responsable achats", "DSI", "Chef de projet",
            "Responsable commercial", "Comptable", "Assistante de direction",
            "Responsable RH", "Responsable logistique",
        ),
    ),
    "nl": Language(
        culture="dutch",
        private_templates=(
            "{s} {w} {x}", "{s} {w} {x}", "{c} {w} {x}", "{s} & {s2} {x}",
            "{c} {w}",
        ),
        edu_templates=("ROC {city}", "Hogeschool {c}", "{c} Academie", "Taleninstituut {c}"),
        gov_templates=("Gemeente {city} - {d}", "Waterschap {c} - {d}"),
        coined=(
            "Noordzee", "Polderland", "Zuiderzee", "Oranje", "Tulp", "Molenwaard",
            "Duinzicht", "Rijnmond", "Waterland", "Zonnehof",
        ),
        departments=(
            "Ruimtelijke Ordening", "Openbare Werken", "ICT", "Onderwijs",
            "Milieu", "Financiën",
        ),
        sectors={
            "MFG": ("Machinebouw", "Techniek", "Metaalbewerking"),
            "FIN": ("Financieel Advies", "Verzekeringen", "Vermogensbeheer"),
            "HLT": ("Zorg", "Medische Techniek", "Thuiszorg"),
            "RET": ("Handel", "Groothandel", "Winkels", "Logistiek"),
            "TEC": ("Software", "ICT", "Data", "Automatisering"),
        },
        titles=(
            "Directeur", "Inkoper", "IT-manager", "Projectleider",
            "Accountmanager", "Office manager", "Controller", "HR-adviseur",
        ),
    ),
}


class Country(NamedTuple):
    weight: int
    language: str
    cultures: tuple[tuple[str, int], ...]
    cities: tuple[tuple[str, str], ...]  # (city, dialling area code)
    dial: str
    landline_groups: tuple[int, ...]
    mobile_prefixes: tuple[str, ...]
    mobile_groups: tuple[int, ...]
    tld: str
    legal_forms: tuple[str, ...]
    dirty_names: tuple[str, ...]


COUNTRIES: Mapping[str, Country] = {
    "DE": Country(
        weight=35,
        language="de",
        cultures=(
            ("german", 75), ("turkish", 8), ("polish", 6), ("italian", 3),
            ("english", 3), ("spanish", 2), ("south_asian", 2), ("chinese", 1),
        ),
        cities=(
            ("Berlin", "30"), ("Hamburg", "40"), ("München", "89"), ("Köln", "221"),
            ("Frankfurt am Main", "69"), ("Stuttgart", "711"), ("Düsseldorf", "211"),
            ("Leipzig", "341"), ("Dresden", "351"), ("Nürnberg", "911"),
            ("Hannover", "511"), ("Bremen", "421"), ("Essen", "201"),
            ("Dortmund", "231"), ("Freiburg im Breisgau", "761"), ("Münster", "251"),
        ),
        dial="+49",
        landline_groups=(7,),
        mobile_prefixes=("151", "160", "170", "171", "176"),
        mobile_groups=(8,),
        tld="de",
        legal_forms=("GmbH", "GmbH", "GmbH", "GmbH & Co. KG", "AG", "KG", "e.K."),
        dirty_names=("Germany", "Deutschland", "de", "GER", "D"),
    ),
    "US": Country(
        weight=18,
        language="en",
        cultures=(
            ("english", 65), ("spanish", 12), ("south_asian", 8), ("chinese", 6),
            ("italian", 4), ("german", 3), ("japanese", 2),
        ),
        cities=(
            ("New York", "212"), ("Chicago", "312"), ("Austin", "512"),
            ("Seattle", "206"), ("Boston", "617"), ("Denver", "303"),
            ("Atlanta", "404"), ("San Francisco", "415"), ("Minneapolis", "612"),
            ("Raleigh", "919"), ("Phoenix", "602"), ("Portland", "503"),
        ),
        dial="+1",
        landline_groups=(3, 4),
        mobile_prefixes=("212", "312", "415", "646", "917"),
        mobile_groups=(3, 4),
        tld="com",
        legal_forms=("Inc.", "Inc.", "LLC", "LLC", "Corp."),
        dirty_names=("USA", "United States", "us", "U.S."),
    ),
    "GB": Country(
        weight=10,
        language="en",
        cultures=(
            ("english", 75), ("south_asian", 12), ("polish", 5), ("french", 3),
            ("italian", 3), ("chinese", 2),
        ),
        cities=(
            ("London", "20"), ("Manchester", "161"), ("Birmingham", "121"),
            ("Leeds", "113"), ("Bristol", "117"), ("Edinburgh", "131"),
            ("Glasgow", "141"), ("Nottingham", "115"), ("Cambridge", "1223"),
        ),
        dial="+44",
        landline_groups=(4, 4),
        mobile_prefixes=("7700", "7911", "7400", "7500"),
        mobile_groups=(6,),
        tld="co.uk",
        legal_forms=("Ltd", "Ltd", "Ltd", "plc", "LLP"),
        dirty_names=("UK", "United Kingdom", "England", "gb"),
    ),
    "FR": Country(
        weight=10,
        language="fr",
        cultures=(
            ("french", 80), ("spanish", 5), ("italian", 5), ("english", 3),
            ("turkish", 3), ("chinese", 2), ("german", 2),
        ),
        cities=(
            ("Paris", "1"), ("Lyon", "4"), ("Marseille", "4"), ("Toulouse", "5"),
            ("Bordeaux", "5"), ("Lille", "3"), ("Nantes", "2"), ("Strasbourg", "3"),
            ("Rennes", "2"), ("Nice", "4"),
        ),
        dial="+33",
        landline_groups=(2, 2, 2, 2),
        mobile_prefixes=("6", "7"),
        mobile_groups=(2, 2, 2, 2),
        tld="fr",
        legal_forms=("SARL", "SAS", "SAS", "SA"),
        dirty_names=("France", "fr", "FRA"),
    ),
    "AT": Country(
        weight=8,
        language="de",
        cultures=(
            ("german", 80), ("turkish", 6), ("polish", 5), ("italian", 4),
            ("english", 3), ("spanish", 2),
        ),
        cities=(
            ("Wien", "1"), ("Graz", "316"), ("Linz", "732"), ("Salzburg", "662"),
            ("Innsbruck", "512"), ("Klagenfurt", "463"),
        ),
        dial="+43",
        landline_groups=(6,),
        mobile_prefixes=("664", "650", "676", "699"),
        mobile_groups=(7,),
        tld="at",
        legal_forms=("GmbH", "GmbH", "GmbH", "AG", "OG", "KG"),
        dirty_names=("Austria", "Österreich", "at", "AUT"),
    ),
    "CH": Country(
        weight=8,
        language="de",
        cultures=(
            ("german", 60), ("french", 15), ("italian", 15), ("english", 5),
            ("turkish", 3), ("south_asian", 2),
        ),
        cities=(
            ("Zürich", "44"), ("Basel", "61"), ("Bern", "31"), ("Luzern", "41"),
            ("St. Gallen", "71"), ("Winterthur", "52"), ("Zug", "41"),
        ),
        dial="+41",
        landline_groups=(3, 2, 2),
        mobile_prefixes=("79", "78", "76", "77"),
        mobile_groups=(3, 2, 2),
        tld="ch",
        legal_forms=("AG", "AG", "AG", "GmbH", "GmbH"),
        dirty_names=("Switzerland", "Schweiz", "CHE", "ch"),
    ),
    "NL": Country(
        weight=11,
        language="nl",
        cultures=(
            ("dutch", 75), ("turkish", 8), ("english", 5), ("german", 5),
            ("south_asian", 4), ("chinese", 3),
        ),
        cities=(
            ("Amsterdam", "20"), ("Rotterdam", "10"), ("Den Haag", "70"),
            ("Utrecht", "30"), ("Eindhoven", "40"), ("Groningen", "50"),
            ("Haarlem", "23"), ("Tilburg", "13"),
        ),
        dial="+31",
        landline_groups=(7,),
        mobile_prefixes=("6",),
        mobile_groups=(8,),
        tld="nl",
        legal_forms=("B.V.", "B.V.", "B.V.", "N.V."),
        dirty_names=("Netherlands", "Holland", "Nederland", "nl"),
    ),
}

UNKNOWN_INDUSTRY: tuple[str, ...] = ("XXX", "N/A", "???", "99", "OTH", "-")

# Free-text notes are what overflowing company names look like in real
# legacy exports: account managers used the name field as a memo.
NAME_NOTES: tuple[str, ...] = (
    "Ansprechpartner wechselt ab Q3, bitte Rechnungen nur an die Zentrale senden.",
    "ACHTUNG: Doppelter Datensatz? Mit Vertrieb Nord klären, bevor Angebote rausgehen.",
    "Rahmenvertrag läuft bis Ende des Jahres, Verlängerung wird gerade verhandelt.",
    "Do not call before 10am, the switchboard is only staffed in the afternoons.",
    "Billing address differs from shipping address, see the old Excel list on the share.",
    "Key account since the 2016 trade fair; CEO knows our MD personally.",
    "Ne pas relancer avant la fin du trimestre, budget gelé.",
    "Merged with subsidiary in 2019, old customer number still used by accounting.",
    "Payment terms 60 days net, approved by finance as an exception.",
)

# German-style transliteration (ü -> ue) rather than dropping accents, because
# that is how German-speaking companies spell these names in e-mail addresses.
# Applied after lower(), so only lower-case letters need an entry.
FOLD = str.maketrans(
    {
        "ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "é": "e", "è": "e",
        "ê": "e", "ë": "e", "à": "a", "â": "a", "ç": "c", "î": "i", "ï": "i",
        "ô": "o", "û": "u", "ù": "u", "ÿ": "y", "ł": "l", "ś": "s", "ż": "z",
        "ź": "z", "ó": "o", "ń": "n", "ą": "a", "ę": "e", "ć": "c", "ş": "s",
        "ğ": "g", "ı": "i", "á": "a", "í": "i", "ú": "u", "ñ": "n",  # noqa: RUF001
    }
)
SLUG_STOPWORDS = frozenset(
    {
        "gmbh", "ag", "kg", "co", "ek", "inc", "llc", "corp", "ltd", "plc",
        "llp", "sarl", "sas", "sa", "bv", "nv", "og", "fuer", "und", "of",
        "the", "de", "du", "des", "la", "le", "les", "van", "der", "den",
        "groupe", "group", "city", "stadt", "department",
    }
)
# fmt: on
WEBSITE_PREFIXES: tuple[str, ...] = ("https://www.",) * 7 + ("www.",) * 2 + ("http://www.",)
