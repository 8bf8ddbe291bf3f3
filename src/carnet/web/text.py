"""The portal's words, French first and English second (``TEXT[key] = (fr, en)``)."""

from __future__ import annotations

TEXT: dict[str, tuple[str, str]] = {
    # layout
    "site": ("Carnet — mon espace santé", "Carnet — my health space"),
    "skip": ("Aller au contenu", "Skip to content"),
    "menu": ("Menu principal", "Main menu"),
    "home": ("Accueil", "Home"),
    "documents": ("Documents", "Documents"),
    "history": ("Historique des accès", "Access history"),
    "access": ("Qui peut accéder à mon dossier", "Who can access my record"),
    "access_short": ("Accès", "Access"),
    "identity": ("Identité", "Identity"),
    "measures": ("Mesures", "Measurements"),
    "no_measures": ("Aucune mesure dans ce dossier.", "No measurement in this record."),
    "values": ("Les valeurs", "The values"),
    "value": ("Valeur", "Value"),
    "sign_out": ("Se déconnecter", "Sign out"),
    "signed_in_as": ("Connecté(e) :", "Signed in:"),
    "lang_other": ("English", "Français"),
    "record_of": ("Dossier de", "Record of"),
    "switch": ("Changer de dossier", "Switch record"),
    "my_record": ("mon dossier", "my record"),
    "child_record": ("dossier d'un enfant", "a child's record"),
    "open": ("Ouvrir", "Open"),
    "footer": (
        "Carnet, logiciel libre. Chaque consultation de votre dossier est tracée.",
        "Carnet, free software. Every access to your record is traced.",
    ),
    # landing
    "welcome": ("Bienvenue sur Carnet", "Welcome to Carnet"),
    "welcome_text": (
        "Votre espace santé : vos documents médicaux, qui y accède, et vos choix.",
        "Your health space: your medical documents, who accesses them, and your choices.",
    ),
    "as_patient": ("Je suis patient(e) ou parent", "I am a patient or a parent"),
    "as_patient_text": (
        "Identifiant, mot de passe puis code à usage unique.",
        "Username, password, then a one-time code.",
    ),
    "as_pro": ("Je suis professionnel(le) de santé", "I am a health professional"),
    "as_pro_text": (
        "Connexion par Pro Santé Connect (carte CPS ou e-CPS).",
        "Sign in with Pro Santé Connect (CPS card or e-CPS).",
    ),
    "sign_in": ("Se connecter", "Sign in"),
    "developers": ("Développeurs : API FHIR", "Developers: FHIR API"),
    "expired": ("Votre session a expiré. Reconnectez-vous.", "Your session expired. Please sign in again."),
    "signin_failed": ("La connexion n'a pas abouti. Recommencez.", "Sign-in did not complete. Try again."),
    "signed_out": ("Vous êtes déconnecté(e).", "You are signed out."),
    "csrf": ("Formulaire expiré ou invalide, recommencez.", "Expired or invalid form, please try again."),
    "not_found": ("Page introuvable", "Page not found"),
    "not_found_text": (
        "Cette page n'existe pas ou vous n'y avez pas accès.",
        "This page does not exist or you have no access to it.",
    ),
    "error": ("Une erreur est survenue", "Something went wrong"),
    "error_text": ("La page n'a pas pu être affichée. Réessayez plus tard.",
                   "The page could not be shown. Please try again later."),
    "back_home": ("Retour à l'accueil", "Back to the home page"),
    # patient home
    "hello": ("Bonjour", "Hello"),
    "new_documents": ("Derniers documents", "Latest documents"),
    "recent_accesses": ("Derniers accès à votre dossier", "Latest accesses to your record"),
    "none_yet": ("Rien pour l'instant.", "Nothing yet."),
    "see_all": ("Tout voir", "See all"),
    # documents
    "filter": ("Filtrer", "Filter"),
    "filters": ("Filtres", "Filters"),
    "doc_type": ("Type de document", "Document type"),
    "any_type": ("Tous les types", "All types"),
    "date_from": ("Du", "From"),
    "date_to": ("Au", "To"),
    "author": ("Auteur", "Author"),
    "date": ("Date", "Date"),
    "title": ("Titre", "Title"),
    "status": ("Statut", "Status"),
    "no_documents": ("Aucun document.", "No document."),
    "count_documents": ("document(s)", "document(s)"),
    "documents_range": ("Documents", "Documents"),
    "view": ("Voir", "View"),
    "download": ("Télécharger", "Download"),
    "masked": ("Masqué aux professionnels", "Hidden from professionals"),
    "mask": ("Masquer aux professionnels", "Hide from professionals"),
    "unmask": ("Ne plus masquer", "Stop hiding"),
    "mask_help": (
        "Un document masqué reste visible par vous, son auteur et votre médecin traitant.",
        "A hidden document stays visible to you, its author and your médecin traitant.",
    ),
    "masked_done": (
        "Le document est maintenant masqué aux professionnels.",
        "The document is now hidden from professionals.",
    ),
    "unmasked_done": ("Le document n'est plus masqué.", "The document is no longer hidden."),
    "upload": ("Ajouter un document", "Add a document"),
    "upload_help": (
        "Vos propres documents (PDF, 10 Mo au plus) rejoignent votre dossier dans la catégorie "
        "« documents du patient ».",
        "Your own documents (PDF, 10 MB at most) join your record as patient documents.",
    ),
    "file": ("Fichier PDF", "PDF file"),
    "description": ("Description", "Description"),
    "send": ("Envoyer", "Send"),
    "uploaded": ("Votre document a été ajouté.", "Your document was added."),
    "not_pdf": ("Le fichier doit être un PDF.", "The file must be a PDF."),
    "too_big": ("Le fichier dépasse 10 Mo.", "The file is larger than 10 MB."),
    "content": ("Contenu", "Content"),
    "no_preview": (
        "Ce document ne s'affiche pas dans la page : téléchargez-le.",
        "This document cannot be shown in the page: download it.",
    ),
    "open_pdf": ("Ouvrir le PDF dans le navigateur", "Open the PDF in the browser"),
    "kind": ("Catégorie", "Category"),
    # history
    "history_help": (
        "Chaque accès à votre dossier est inscrit dans un journal signé et infalsifiable. "
        "« Vérifier » contrôle la preuve mathématique qu'une trace y figure.",
        "Every access to your record is written in a signed, tamper-evident log. "
        '"Verify" checks the mathematical proof that an entry is in it.',
    ),
    "when": ("Quand", "When"),
    "who": ("Qui", "Who"),
    "what": ("Quoi", "What"),
    "mode": ("Mode", "Mode"),
    "outcome": ("Résultat", "Outcome"),
    "normal": ("Normal", "Normal"),
    "emergency": ("Urgence", "Emergency"),
    "regulation": ("Régulation (Centre 15)", "Regulation (Centre 15)"),
    "reason": ("Motif", "Reason"),
    "verify": ("Vérifier", "Verify"),
    "verified": ("Preuve vérifiée :", "Proof verified:"),
    "verify_failed": ("La vérification a échoué :", "Verification failed:"),
    "verify_later": (
        "Cette trace n'est pas encore dans un point de contrôle signé ; réessayez dans quelques secondes.",
        "This entry is not in a signed checkpoint yet; try again in a few seconds.",
    ),
    "verify_cli": (
        "Pour vérifier vous-même, hors de ce site :",
        "To check it yourself, away from this site:",
    ),
    "include_mine": ("Inclure mes propres consultations", "Include my own views"),
    "older": ("Plus anciens", "Older"),
    "newer": ("Plus récents", "Newer"),
    "success": ("Réussi", "Succeeded"),
    "refused": ("Refusé", "Refused"),
    "no_history": ("Aucun accès pour l'instant.", "No access yet."),
    # access
    "gp": ("Médecin traitant", "Médecin traitant (regular doctor)"),
    "care_team": ("Équipe de soins", "Care team"),
    "authorised": ("Professionnels autorisés", "Authorised professionals"),
    "blocked": ("Professionnels bloqués", "Blocked professionals"),
    "representatives": ("Représentants légaux", "Legal representatives"),
    "no_one": ("Personne.", "No one."),
    "rights": ("Droits", "Rights"),
    "authorise": ("Autoriser", "Authorise"),
    "block": ("Bloquer", "Block"),
    "unblock": ("Débloquer", "Unblock"),
    "withdraw": ("Retirer l'autorisation", "Withdraw"),
    "professional": ("Professionnel", "Professional"),
    "choose_pro": ("Choisissez un professionnel", "Choose a professional"),
    "pro_search": ("Nom du professionnel", "Professional's name"),
    "search": ("Rechercher", "Search"),
    "emergency_title": ("Accès en urgence", "Emergency access"),
    "emergency_on": (
        "Les professionnels peuvent accéder à votre dossier en cas d'urgence (accès tracé).",
        "Professionals may access your record in an emergency (traced).",
    ),
    "emergency_off": ("Vous vous êtes opposé(e) à l'accès en urgence.", "You opposed emergency access."),
    "oppose": ("M'opposer à l'accès en urgence", "Oppose emergency access"),
    "allow_emergency": ("Autoriser de nouveau l'accès en urgence", "Allow emergency access again"),
    "done": ("C'est fait.", "Done."),
    "access_why": ("Pourquoi", "Why"),
    # identity
    "ins": ("Identité nationale de santé (INS)", "National health identity (INS)"),
    "matricule": ("Matricule INS", "INS number"),
    "birth_name": ("Nom de naissance", "Birth name"),
    "given_names": ("Prénoms", "Given names"),
    "birth_date": ("Date de naissance", "Birth date"),
    "sex": ("Sexe", "Sex"),
    "birthplace": ("Lieu de naissance (code INSEE)", "Birthplace (INSEE code)"),
    "identity_status": ("Statut de l'identité", "Identity status"),
    "status_PROV": (
        "Provisoire : l'identité n'a été ni vérifiée auprès du téléservice INSi ni contrôlée sur "
        "une pièce d'identité.",
        "Provisional: the identity was neither checked with the INSi teleservice nor against an "
        "identity document.",
    ),
    "status_RECUP": (
        "Récupérée : l'INS a été obtenue du téléservice INSi, mais aucune pièce d'identité n'a "
        "été contrôlée.",
        "Retrieved: the INS came from the INSi teleservice, but no identity document was checked.",
    ),
    "status_VALI": (
        "Validée : une pièce d'identité a été contrôlée, mais l'INS n'a pas été vérifiée auprès "
        "du téléservice INSi.",
        "Validated: an identity document was checked, but the INS was not "
        "verified with the INSi teleservice.",
    ),
    "status_QUAL": (
        "Qualifiée : l'INS vient du téléservice INSi et une pièce d'identité a été contrôlée. Vos "
        "documents peuvent être partagés entre professionnels.",
        "Qualified: the INS came from the INSi teleservice and an identity document was checked. "
        "Your documents can be shared between professionals.",
    ),
    "no_ins": ("Aucune INS n'est encore associée à ce dossier.", "No INS is linked to this record yet."),
    # professional
    "find_patient": ("Trouver un patient", "Find a patient"),
    "by_ins": ("Par son INS", "By INS"),
    "by_traits": ("Par ses traits d'identité", "By identity traits"),
    "family": ("Nom", "Family name"),
    "given": ("Prénom", "Given name"),
    "results": ("Résultats", "Results"),
    "no_patient": ("Aucun dossier accessible ne correspond.", "No accessible record matches."),
    "no_patient_help": (
        "Un dossier dont vous n'avez pas les droits n'apparaît pas ; l'accès en urgence "
        "reste possible depuis sa page si vous connaissez son INS.",
        "A record you have no right to does not appear; emergency access stays possible "
        "from its page if you know the INS.",
    ),
    "withheld": (
        "Vous n'avez pas accès à ce dossier : le patient ne vous a pas autorisé(e), vous a "
        "bloqué(e), ou son identité n'est pas qualifiée. Ce qui vous est caché n'est pas affiché.",
        "You have no access to this record: the patient did not authorise you, blocked you, or the "
        "identity is not qualified. What is hidden from you is not shown.",
    ),
    "withheld_docs": (
        "Certains documents peuvent vous être cachés : masqués par le patient ou hors de votre "
        "habilitation (profession).",
        "Some documents may be hidden from you: masked by the patient or outside your "
        "profession's habilitation.",
    ),
    "publish": ("Publier un document", "Publish a document"),
    "published": ("Le document a été publié dans le dossier.", "The document was published in the record."),
    "emergency_warning": (
        "Attention : l'accès en urgence est réservé à une situation qui met en jeu la vie ou "
        "la santé du patient. Il est tracé, visible par le patient, et votre motif est "
        "conservé. Il dure 15 minutes.",
        "Warning: emergency access is for a situation that puts the patient's life or health "
        "at risk. It is traced, shown to the patient, and your reason is kept. It lasts 15 "
        "minutes.",
    ),
    "emergency_reason": (
        "Motif de l'accès en urgence (obligatoire)",
        "Reason for emergency access (required)",
    ),
    "emergency_go": ("Accéder en urgence", "Access in an emergency"),
    "emergency_active": (
        "Accès en urgence en cours — tracé et visible par le patient.",
        "Emergency access in progress — traced and shown to the patient.",
    ),
    "emergency_refused": ("Accès en urgence refusé :", "Emergency access refused:"),
    "emergency_refused_by_ins": (
        "Accès en urgence refusé : aucun dossier accessible en urgence pour ce matricule INS.",
        "Emergency access refused: no record open to emergency access for this INS.",
    ),
    "reason_required": ("Le motif est obligatoire.", "A reason is required."),
    "confidentiality": ("Confidentialité", "Confidentiality"),
    "visibility": ("Visibilité", "Visibility"),
    "vis_none": (
        "Visible par le patient et les professionnels autorisés",
        "Visible to the patient and authorised professionals",
    ),
    "vis_INVISIBLE_PATIENT": (
        "Non visible par le patient (en attente d'une consultation d'annonce)",
        "Not visible to the patient (until it is explained to them)",
    ),
    "vis_INVISIBLE_REPRESENTANTS_LEGAUX": (
        "Non visible par les représentants légaux",
        "Not visible to legal representatives",
    ),
    "document_date": ("Date de l'acte", "Date of care"),
    "refused_publish": ("La publication a été refusée :", "Publication was refused:"),
}
